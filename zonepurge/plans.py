"""Cloudflare's purge limits per plan: the defaults that settings and the sandbox start from.

Figures from Cloudflare's developer docs as summarised in the project's API facts file
(shared/cloudflare/README.md, "Limits", late 2026). They are per *account*: every zone of an
account on the same plan draws from the same buckets. Cloudflare changes them from time to
time, so each one can be overridden by a setting (see ``zonepurge.settings``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from zonepurge.items import Kind


class Plan(StrEnum):
    FREE = "free"
    PRO = "pro"
    BUSINESS = "business"
    ENTERPRISE = "enterprise"


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """Purge limits of one plan.

    ``flex_*`` is the bucket shared by tag, host, prefix and purge-everything requests (counted in
    requests); ``url_*`` is the bucket for purge by URL (counted in URLs).
    """

    flex_rate_per_s: float
    flex_burst: int
    flex_items_per_request: int
    url_rate_per_s: float
    url_burst: int
    url_items_per_request: int

    def items_per_request(self, kind: Kind) -> int:
        """How many items of a kind one Cloudflare request may carry."""
        if kind is Kind.FILES:
            return self.url_items_per_request
        if kind is Kind.EVERYTHING:
            return 1
        return self.flex_items_per_request


# "Free: 5 per minute, bucket 25" and so on. The URL bucket's size is not published; one second's
# worth of URLs is assumed, which is also what the sandbox enforces by default.
PLAN_LIMITS: dict[Plan, PlanLimits] = {
    Plan.FREE: PlanLimits(5 / 60, 25, 100, 800, 800, 100),
    Plan.PRO: PlanLimits(5, 25, 100, 1500, 1500, 100),
    Plan.BUSINESS: PlanLimits(10, 50, 100, 1500, 1500, 100),
    Plan.ENTERPRISE: PlanLimits(50, 500, 100, 3000, 3000, 500),
}
