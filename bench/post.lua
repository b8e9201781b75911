-- wrk script: POST /orders with the seed's order body (keep-alive).
wrk.method = "POST"
wrk.body = '{"product":"ProductY","quantity":2,"customer_name":"Bob Anderson","customer_address":"101 Pine St"}'
wrk.headers["Content-Type"] = "application/json"
