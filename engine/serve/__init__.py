"""`seqpan serve`: the grounding engine behind an HTTP API (Starlette on uvicorn), with health,
readiness and Prometheus metrics, and the same API scaled out over Ray Serve replicas.

    settings.py   ServeSettings: what one server (or one replica) is started with
    parsing.py    an HTTP body -> grounding requests (or an entry's error), as `seqpan ground --requests` reads them
    metrics.py    ServiceMetrics: the Prometheus counters, histograms and gauges
    guards.py     bearer-token auth, the body-size limit, the bytes of bodies held at once, HTTP refusals
    protocol.py   uvicorn's httptools protocol with a connection cap, header/body deadlines, a header limit
    service.py    GroundingService: load + warm the engine, the micro-batcher, ground asynchronously
    app.py        build_app, Api: the ASGI routes (/v1/ground, /health, /ready, /metrics); GroundFirst
                  takes POST /v1/ground past Starlette's middleware and routing
    process.py    run_one_process: uvicorn on a bound socket; SIGTERM/Ctrl-C drain, then exit 0
    ray_app.py    run_on_ray: the same app as a Ray Serve deployment with N replicas
    page.py       Page: the web page at / (static/) and its API routes (/v1/videos...), video entries of /v1/ground
    library.py    what the page can ground: features and videos listed, confined, videos' features extracted once
    ranges.py     HTTP range requests on a file (the page's video player)
    videos.py     RegisteredVideos: PUT/GET/DELETE /v1/videos/{id}, a bounded store; `registered` entries
"""
