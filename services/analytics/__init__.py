"""Analytics: response-time records and their statistics (``MetricsCollector``)."""

from services.analytics.metrics import MAX_BATCH_SIZE, MetricsCollector
from services.analytics.models import ResponseRecord

__all__ = ["MAX_BATCH_SIZE", "MetricsCollector", "ResponseRecord"]
