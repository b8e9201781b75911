-- wrk script: GET with If-None-Match: $ETAG (a cache revalidating what it
-- holds; the server answers 304 with no body while the order is unchanged).
wrk.headers["If-None-Match"] = os.getenv("ETAG")
