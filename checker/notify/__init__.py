"""Notifications: routes, the messages they carry, and delivery from the outbox.

In Alertmanager's shape: ``NotifyPolicy`` (pure) decides who is told what after a window,
the store keeps the outbox rows it returns, and the ``Dispatcher`` sends them through a
``Sender`` per route (``sender_for``).
"""

from checker.notify.dispatcher import DeliveryMetrics, Dispatcher
from checker.notify.policy import NotifyPolicy
from checker.notify.senders import Sender, sender_for

__all__ = ["DeliveryMetrics", "Dispatcher", "NotifyPolicy", "Sender", "sender_for"]
