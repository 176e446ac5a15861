"""HTTP routes of the intake service (thin: parse, authorise, call service, shape)."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1")
