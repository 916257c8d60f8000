"""The Amazon SQS driver package: :mod:`~pgqueue.drivers.sqs.driver` (the operations, over
boto3; the ``sqs`` extra)."""

from pgqueue.drivers.sqs.driver import SqsDriver

__all__ = ["SqsDriver"]
