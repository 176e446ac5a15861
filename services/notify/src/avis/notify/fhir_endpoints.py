"""The coordinators' view of the FHIR endpoints the physicians' copies are posted to, and their
way back for a disabled one: an endpoint disabled after failed posts in a row (or a 410 Gone)
holds the posts to it waiting (fhir.py), until a coordinator re-enables it here, which clears
its failure count and resumes them at once. What they see is each institution's code, whether
its endpoint takes posts, its failed posts in a row and why it was disabled: never its URL
(which may carry a token), never a person."""

import structlog

from avis.notify import rules
from avis.notify.models import FhirEndpoint, FhirEndpointList
from avis.notify.queue import DueQueue
from avis.notify.settings import Settings
from avis.notify.store import EndpointDoc, SendDoc, Store
from avis.shared import clock
from avis.shared.mongo import AggregateLocks, lock_key
from avis.shared.problems import not_found

log = structlog.get_logger("avis.notify")


class FhirEndpoints:
    """Lists the institutions' FHIR endpoints and re-enables a disabled one."""

    def __init__(
        self,
        *,
        store: Store,
        locks: AggregateLocks,
        settings: Settings,
        fhir_queue: DueQueue[SendDoc],
    ) -> None:
        self.store = store
        self.locks = locks
        self.settings = settings
        self.fhir_queue = fhir_queue

    def _fresh(self, institution: str) -> EndpointDoc:
        return EndpointDoc(id=institution, url=self.settings.physician_fhir_endpoints[institution])

    def _current(self, institution: str, kept: EndpointDoc | None) -> EndpointDoc:
        """Its state now: the one kept, if it is for the endpoint set now."""
        configured = self.settings.physician_fhir_endpoints.get(institution)
        if kept is not None and rules.endpoint_state_holds(configured, kept.url):
            return kept
        return self._fresh(institution)

    async def list(self) -> FhirEndpointList:
        """Every institution with an endpoint set, by code, in one read."""
        codes = sorted(self.settings.physician_fhir_endpoints)
        kept = {e.id: e for e in await self.store.endpoints_of(codes)}
        return FhirEndpointList(items=[self._current(c, kept.get(c)).view() for c in codes])

    async def enable(self, institution: str) -> FhirEndpoint:
        """Re-enable the institution's endpoint: its failure count cleared, the posts that
        waited for it queued at once (nothing changes for one already enabled)."""
        if institution not in self.settings.physician_fhir_endpoints:
            raise not_found("FHIR endpoint")
        async with self.locks.hold(lock_key("fhir-endpoint", institution)):
            state = await self.store.endpoint(institution)
            waiting = [] if state is None else list(state.waiting)
            state = self._current(institution, state)
            if state.enabled and not waiting:
                return state.view()
            state.enabled, state.disabled_reason, state.disabled_at = True, None, None
            state.consecutive_failures, state.waiting = 0, []
            state.updated_at = now = clock.now()
            await self.store.save_endpoint(state)
            await self.store.resume_sends(waiting, now)
            for send_id in waiting:
                await self.fhir_queue.file(send_id, now)
        self.fhir_queue.wake()
        log.info("fhir endpoint enabled", institution=institution, resumed=len(waiting))
        return state.view()
