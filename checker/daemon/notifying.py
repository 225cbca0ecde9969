"""The one place notification parts are made from the config: the policy and the dispatcher.

Everything below takes only what it uses (routes, senders, the delivery section), so
delivery can be tested, and run, without a daemon config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from checker.daemon.windows import utcnow
from checker.notify.dispatcher import Dispatcher
from checker.notify.policy import NotifyPolicy
from checker.notify.senders import sender_for

if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import datetime

    from checker.config import Settings
    from checker.daemon.metrics import Metrics
    from checker.store import Store


def notify_policy(settings: Settings) -> NotifyPolicy:
    """The config's routes, ``default_notifiers`` and ``delivery.max_listed``."""
    return NotifyPolicy(settings.notifiers, tuple(settings.default_notifiers), settings.delivery.max_listed)


def build_dispatcher(settings: Settings, store: Store, metrics: Metrics, *,
                     clock: Callable[[], datetime] = utcnow) -> Dispatcher:
    """A sender per configured route, and the delivery section."""
    template = settings.trace_url_template
    senders = {name: sender_for(route, template) for name, route in settings.notifiers.items()}
    return Dispatcher(store, senders, settings.delivery, metrics, clock=clock)
