#!/bin/sh
# What Ray Serve runs as HAProxy (RAY_SERVE_HAPROXY_BINARY_PATH, set by
# crowdplay.config.apply_ray_environment and by cluster.yaml): haproxy.py next to this file
# rewrites the configuration Serve wrote (side listeners on 127.0.0.1, X-Forwarded-For on), then
# becomes the real HAProxy in this same process, with the same arguments.
# CROWDPLAY_HAPROXY_PYTHON is the Python with ray[serve] installed (it finds the bundled HAProxy);
# -I: nothing from the environment or this directory shadows the standard library.
exec "${CROWDPLAY_HAPROXY_PYTHON:-python3}" -I "$(dirname "$0")/haproxy.py" "$@"
