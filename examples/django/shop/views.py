"""Create an order and enqueue its receipt in ONE transaction."""

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse

from shop.models import Order
from shop.tasks import send_receipt


def create_order(request: HttpRequest) -> JsonResponse:
    """POST item=...: the order row and the receipt job commit together. With fail=1 the view
    raises after both writes: the transaction rolls back, and neither exists."""
    with transaction.atomic():
        order = Order.objects.create(item=request.POST.get("item", "book"))
        result = send_receipt.enqueue(order.id)
        if request.POST.get("fail"):
            raise RuntimeError("payment declined")  # rolls back the order AND the job
    return JsonResponse({"order_id": order.id, "result_id": result.id})


def receipt_status(request: HttpRequest, result_id: str) -> JsonResponse:
    result = send_receipt.get_result(result_id)
    body = {"status": str(result.status)}
    if result.is_finished and not result.errors:
        body["value"] = json.loads(json.dumps(result.return_value))
    return JsonResponse(body)
