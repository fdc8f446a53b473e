"""Talking to the hospital's FHIR R4 server, as any R4 server understands it.

Nothing here knows which server it is: a search by identifier, then one transaction
Bundle (FHIR R4 http.html §3.1.0.11) whose entries are either a conditional create
(`POST` with `ifNoneExist`, §3.1.0.8.1) when the search found nothing, or an update of
the resource found (`PUT Type/id` with `ifMatch` on its version, §3.1.0.5.1, so a
change made there in between is refused, 412, and retried after a fresh search rather
than overwritten). This is how DICOMcast keeps a FHIR server in step with a DICOM
archive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

FHIR_JSON = "application/fhir+json"


class FhirPushFailed(Exception):
    """The server refused or could not be reached; the message says which and why."""


@dataclass(frozen=True)
class Found:
    """A resource the server holds: its logical id, version and content."""

    id: str
    version: str | None
    resource: dict[str, Any]


class FhirServer:
    """One FHIR R4 server at `base_url`, with bearer or basic credentials (or none)."""

    def __init__(self, base_url: str, *, token: str | None = None,
                 username: str | None = None, password: str | None = None,
                 timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Accept": FHIR_JSON}
        auth: httpx.BasicAuth | None = None
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif username:
            auth = httpx.BasicAuth(username, password or "")
        self._client = httpx.Client(headers=headers, auth=auth, timeout=timeout,
                                    follow_redirects=False)

    def close(self) -> None:
        self._client.close()

    def find_one(self, resource_type: str, identifier: str) -> Found | None:
        """The one `resource_type` with `identifier` (`system|value`), None when there
        is none; `FhirPushFailed` when several match (which one to update?)."""
        bundle = self._send("GET", f"/{resource_type}",
                            params={"identifier": identifier})
        found = [e["resource"] for e in bundle.get("entry") or []
                 if isinstance(e.get("resource"), dict)
                 and e["resource"].get("resourceType") == resource_type
                 and (e.get("search") or {}).get("mode", "match") == "match"]
        if len(found) > 1:
            raise FhirPushFailed(
                f"{len(found)} {resource_type} resources on {self.base_url} have identifier "
                f"{identifier}; cannot tell which one to update")
        if not found:
            return None
        resource = found[0]
        return Found(str(resource.get("id")),
                     (resource.get("meta") or {}).get("versionId"), resource)

    def transaction(self, bundle: dict[str, Any]) -> dict[str, Any]:
        """POST a transaction Bundle; the transaction-response, or `FhirPushFailed`."""
        response = self._send("POST", "", body=bundle)
        if response.get("resourceType") != "Bundle":
            raise FhirPushFailed(f"{self.base_url} answered the transaction with a "
                                 f"{response.get('resourceType')!r}, not a Bundle")
        for index, entry in enumerate(response.get("entry") or []):
            status = str((entry.get("response") or {}).get("status", ""))
            if not status[:1] == "2":
                raise FhirPushFailed(f"{self.base_url}: transaction entry {index} answered "
                                     f"{status or 'no status'}")
        return response

    def _send(self, method: str, path: str, *, params: dict[str, str] | None = None,
              body: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.base_url + path
        try:
            response = self._client.request(
                method, url, params=params, json=body,
                headers={"Content-Type": FHIR_JSON} if body is not None else None)
        except httpx.HTTPError as exc:
            raise FhirPushFailed(f"cannot reach {url}: {exc.__class__.__name__}: {exc}"
                                 ) from exc
        if response.status_code >= 400:
            raise FhirPushFailed(f"{method} {url} answered {response.status_code}: "
                                 f"{_diagnostics(response)}")
        try:
            answer = response.json()
        except ValueError as exc:
            raise FhirPushFailed(f"{method} {url} answered {response.status_code} with "
                                 f"no JSON ({response.headers.get('content-type')})") from exc
        if not isinstance(answer, dict):
            raise FhirPushFailed(f"{method} {url} answered JSON that is not a resource")
        return answer


def _diagnostics(response: httpx.Response) -> str:
    """What an error answer says: its OperationOutcome's issues, else its first bytes."""
    try:
        outcome = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    issues = outcome.get("issue") if isinstance(outcome, dict) else None
    if not issues:
        return str(outcome)[:300]
    return "; ".join(str(i.get("diagnostics") or i.get("details", {}).get("text")
                         or i.get("code")) for i in issues)[:600]
