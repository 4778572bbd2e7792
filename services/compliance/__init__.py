"""Compliance: SLA targets, breaches and compliance rates (``SLAMonitor``)."""

from services.compliance.sla import SLAMonitor, SLARecord, SLAStatus

__all__ = ["SLAMonitor", "SLARecord", "SLAStatus"]
