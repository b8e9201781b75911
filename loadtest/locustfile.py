"""The seed's Locust test of the orders API, as the seed ran it.

Each user alternates GET /orders and POST /orders (weights 1:1, the same
order body) with 1-3 s of think time -- the `seed` scenario of
orders-loadtest. Run headless as the seed did, e.g.:

    locust -f loadtest/locustfile.py --headless -H http://127.0.0.1:8000 \
           -u 1500 -r 25 -t 60s

Locust is a PyPI package; on Debian install it in a venv (the system Python
refuses pip installs): python3 -m venv .venv && .venv/bin/pip install locust
"""

from locust import HttpUser, between, task

ORDER = {
    "product": "ProductY",
    "quantity": 2,
    "customer_name": "Bob Anderson",
    "customer_address": "101 Pine St",
}


class OrdersUser(HttpUser):
    wait_time = between(1, 3)

    @task
    def list_orders(self):
        self.client.get("/orders")

    @task
    def create_order(self):
        self.client.post("/orders", json=ORDER)
