"""The requests Okta and Microsoft Entra ID send to a SCIM app, written from their public
references (shared/reference/idp-clients.md §4): Okta's SCIM 2.0 reference
(okta/okta-developer-docs reference/scim/scim-20), Entra's "Develop and plan provisioning for a
SCIM endpoint" and its "Known issues ... SCIM 2.0 protocol compliance" page, and the wire log in
MicrosoftDocs/azure-docs#21660 (raw `"` in the query string).

`run(send, nonce)` plays the whole provisioning story once — lookups in every encoding the
clients use, create, PUT and PATCH updates, each deactivation shape, group push and membership
changes, deletes — and returns each step's status and body with what legitimately differs
between two runs (ids, timestamps, versions, the host in locations) normalised away. Run once
directly against the SCIM server and once through scimgate, the two results must be equal.
"""

import json
import re

USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
OKTA = "Okta SCIM Client 1.0.0"
ENTRA = "Microsoft.Identity.Provisioning"


def patch(*ops: dict) -> dict:
    return {"schemas": [PATCH], "Operations": list(ops)}


class Story:
    """One run: sends each step with `send(method, target, body, agent)`, records its result."""

    def __init__(self, send, nonce: str):
        self.send, self.nonce = send, nonce
        self.steps: list[tuple[str, object]] = []
        self.ids: list[str] = []

    def step(self, name: str, method: str, target: str, body: dict | None = None,
             agent: str = OKTA):
        r = self.send(method, target, body, agent)
        self.steps.append((name, r))
        return r

    def created(self, r) -> str:
        """The id of the resource `r` created (also remembered for normalisation)."""
        try:
            rid = json.loads(r.body)["id"]
        except (ValueError, KeyError):
            raise AssertionError(f"create answered {r.status}: {r.body[:300]!r}") from None
        self.ids.append(rid)
        return rid

    def results(self) -> list[tuple[str, int, object]]:
        return [(name, r.status, self.normalise(r.body)) for name, r in self.steps]

    def normalise(self, body: bytes):
        text = body.decode("utf-8", errors="replace")
        for i, rid in enumerate(self.ids):
            text = text.replace(rid, f"<id{i}>")
        try:
            doc = json.loads(text) if text.strip() else None
        except ValueError:
            return text
        return scrub(doc)


def scrub(doc):
    """Drops what two runs legitimately differ in: meta timestamps and versions, and the
    scheme and authority of locations (one run is addressed through scimgate)."""
    if isinstance(doc, list):
        return [scrub(x) for x in doc]
    if not isinstance(doc, dict):
        return doc
    out = {}
    for key, value in doc.items():
        if key in ("created", "lastModified", "version"):
            continue
        if key in ("location", "$ref") and isinstance(value, str):
            value = re.sub(r"^https?://[^/]+", "", value)
        out[key] = scrub(value)
    return out


def run(send, nonce: str) -> tuple[list[tuple[str, int, object]], list[str]]:
    """Plays the story; returns the normalised results and the ids of what is left to clean up
    (Okta never deletes users)."""
    s = Story(send, nonce)
    user = f"okta.{nonce}@example.com"
    ext = f"00u{nonce}"
    second = f"entra.{nonce}@example.com"
    group = f"Provisioners {nonce}"
    q_user = f"userName%20eq%20%22{user}%22"

    # --- Okta: test connection, lookup, create (reference/scim/scim-20) -----------------------
    s.step("okta: test connection", "GET", "/Users?startIndex=1&count=2")
    s.step("okta: lookup by userName (absent)", "GET", f"/Users?filter={q_user}&startIndex=1&count=100")
    okta_user = {
        "schemas": [USER], "userName": user, "externalId": ext,
        "name": {"givenName": "Ada", "familyName": "Lovelace"},
        "emails": [{"primary": True, "value": user, "type": "work"}],
        "displayName": "Ada Lovelace", "locale": "en-US", "groups": [],
        "password": "1mz050nq", "active": True,
    }
    uid = s.created(s.step("okta: create user (with password)", "POST", "/Users", okta_user))
    s.step("okta: lookup by userName (present)", "GET", f"/Users?filter={q_user}&startIndex=1&count=100")

    # --- Entra: the lookup filter in every encoding seen on the wire ---------------------------
    s.step("entra: userName, + for spaces, raw quotes", "GET", f'/Users?filter=userName+eq+"{user}"', agent=ENTRA)
    s.step("entra: externalId, raw quotes", "GET", f'/Users?filter=externalId+eq+"{ext}"', agent=ENTRA)
    s.step("entra: userName, %20 and %22", "GET", f"/Users?filter={q_user}", agent=ENTRA)
    s.step("entra: userName, %20 and raw quotes", "GET", f'/Users?filter=userName%20eq%20"{user}"', agent=ENTRA)
    s.step("entra: externalId, + and %22", "GET", f"/Users?filter=externalId+eq+%22{ext}%22", agent=ENTRA)
    s.step("okta: get user", "GET", f"/Users/{uid}")

    # --- updates and the deactivation shapes ----------------------------------------------------
    s.step("okta: PUT update (AIW apps always PUT)", "PUT", f"/Users/{uid}",
           {**okta_user, "id": uid, "displayName": "Ada King"})
    s.step("okta: deactivate, pathless PATCH replace", "PATCH", f"/Users/{uid}",
           patch({"op": "replace", "value": {"active": False}}))
    s.step("okta: deactivate, PUT active false", "PUT", f"/Users/{uid}",
           {**okta_user, "id": uid, "active": False})
    s.step("entra: deactivate, default (Replace, string \"False\")", "PATCH", f"/Users/{uid}",
           patch({"op": "Replace", "path": "active", "value": "False"}), agent=ENTRA)
    s.step("entra: aadOptscim062020, pathless replace with dotted keys", "PATCH", f"/Users/{uid}",
           patch({"op": "replace", "value": {"active": False, "name.givenName": "Augusta",
                                             "displayName": "Augusta Ada King"}}), agent=ENTRA)
    s.step("entra: Replace a filtered multi-valued path", "PATCH", f"/Users/{uid}",
           patch({"op": "Replace", "path": 'emails[type eq "work"].value', "value": f"work.{user}"}),
           agent=ENTRA)
    s.step("okta: get user after the updates", "GET", f"/Users/{uid}")

    # --- Entra creates a second user ------------------------------------------------------------
    uid2 = s.created(s.step("entra: create user", "POST", "/Users", {
        "schemas": [USER], "externalId": f"ent{nonce}", "userName": second, "active": True,
        "displayName": "Grace Hopper", "name": {"givenName": "Grace", "familyName": "Hopper"},
        "emails": [{"primary": True, "type": "work", "value": second}],
    }, agent=ENTRA))

    # --- groups: push, lookup, rename, membership add / remove / replace, PUT ------------------
    gid = s.created(s.step("okta: group push (create with members)", "POST", "/Groups", {
        "schemas": [GROUP], "displayName": group, "members": [{"value": uid, "display": user}],
    }))
    q_group = group.replace(" ", "+")
    s.step("entra: group lookup, excludedAttributes, raw quotes", "GET",
           f'/Groups?excludedAttributes=members&filter=displayName+eq+"{q_group}"', agent=ENTRA)
    s.step("okta: group rename (PATCH value with id)", "PATCH", f"/Groups/{gid}",
           patch({"op": "replace", "value": {"id": gid, "displayName": f"{group} renamed"}}))
    s.step("okta: membership add (value list)", "PATCH", f"/Groups/{gid}",
           patch({"op": "add", "path": "members", "value": [{"value": uid2, "display": second}]}))
    s.step("okta: membership remove (members[value eq ...])", "PATCH", f"/Groups/{gid}",
           patch({"op": "remove", "path": f'members[value eq "{uid2}"]'}))
    s.step("okta: membership replace (whole list)", "PATCH", f"/Groups/{gid}",
           patch({"op": "replace", "path": "members", "value": [{"value": uid}, {"value": uid2}]}))
    s.step("okta: group PUT with the whole membership", "PUT", f"/Groups/{gid}", {
        "schemas": [GROUP], "id": gid, "displayName": group, "members": [{"value": uid2}],
    })
    s.step("entra: membership Add (capitalised)", "PATCH", f"/Groups/{gid}",
           patch({"op": "Add", "path": "members", "value": [{"value": uid}]}), agent=ENTRA)
    s.step("entra: membership Remove (capitalised, filter)", "PATCH", f"/Groups/{gid}",
           patch({"op": "Remove", "path": f'members[value eq "{uid2}"]'}), agent=ENTRA)
    s.step("okta: get group", "GET", f"/Groups/{gid}")

    # --- deletes (Entra deletes users; both delete groups) --------------------------------------
    s.step("okta: delete group", "DELETE", f"/Groups/{gid}")
    s.step("entra: delete user", "DELETE", f"/Users/{uid2}", agent=ENTRA)
    s.step("entra: get the deleted user", "GET", f"/Users/{uid2}", agent=ENTRA)
    s.step("entra: lookup the deleted user", "GET", f'/Users?filter=userName+eq+"{second}"', agent=ENTRA)
    return s.results(), [uid]


# Steps whose outcome is pinned, so that two runs cannot agree by failing alike.
EXPECTED = {
    "okta: create user (with password)": (201, None),
    "okta: lookup by userName (absent)": (200, 0),
    "okta: lookup by userName (present)": (200, 1),
    "entra: userName, + for spaces, raw quotes": (200, 1),
    "entra: externalId, raw quotes": (200, 1),
    "entra: userName, %20 and raw quotes": (200, 1),
    "entra: group lookup, excludedAttributes, raw quotes": (200, 1),
    "okta: group push (create with members)": (201, None),
    "okta: delete group": (204, None),
    "entra: delete user": (204, None),
    "entra: get the deleted user": (404, None),
    "entra: lookup the deleted user": (200, 0),
}
