-- wrk script: GET /orders with If-None-Match: $ETAG_LIST (a cache
-- revalidating the list it holds: a 304 with no body while it is unchanged).
wrk.headers["If-None-Match"] = os.getenv("ETAG_LIST")
