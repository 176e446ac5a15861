"""HTTP routes of the notify service (thin: parse, authorise, call service, shape)."""

from fastapi import APIRouter

router = APIRouter(prefix="/v1")
