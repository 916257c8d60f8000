"""The shop's tasks: plain functions decorated with Django's ``@task``."""

try:  # Django >= 6
    from django.tasks import task
except ImportError:  # Django 5.2 with the django-tasks backport
    from django_tasks import task

from shop.models import Order


@task(queue_name="emails", priority=10)
def send_receipt(order_id: int) -> str:
    """Pretend to email a receipt; returns what was sent."""
    order = Order.objects.get(id=order_id)
    return f"receipt for order {order.id}: {order.item}"


@task(takes_context=True)
def count_attempts(context, label: str) -> dict:
    """Reports the attempt it runs as (``context`` is Django's ``TaskContext``)."""
    return {"label": label, "attempt": context.attempt, "id": context.task_result.id}


class OutOfStock(Exception):
    pass


@task
def always_fails(item: str) -> None:
    raise OutOfStock(item)
