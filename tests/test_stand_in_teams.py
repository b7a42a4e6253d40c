"""The Teams stand-in itself: driven over plain HTTP, it refuses what Microsoft's services refuse.

Other suites trust it to catch bugs, so each rule they rely on is checked here once.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
import requests

from tests.stand_ins.teams import BOTFRAMEWORK_SCOPE, GENERAL_ID, GRAPH_SCOPE, TeamsStandIn

APP_ID = "00000000-0000-0000-0000-0000000000a1"
APP_PASSWORD = "app-secret"


@pytest.fixture
async def teams() -> AsyncIterator[TeamsStandIn]:
    async with TeamsStandIn(APP_ID, APP_PASSWORD) as stand_in:
        stand_in.add_user("u-ann", "Ann@Example.com", "Ann Rep")
        stand_in.add_user("u-bob", "bob@example.com", "Bob Manager")
        stand_in.add_user("u-cy", "cy@example.com", "Cy Outsider", in_team=False)
        yield stand_in


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def login(http: aiohttp.ClientSession, teams: TeamsStandIn, scope: str, *, tenant: str | None = None,
                secret: str = APP_PASSWORD, client_id: str = APP_ID) -> tuple[int, dict[str, Any]]:
    url = teams.login_url.rsplit("/", 1)[0] + "/" + (tenant or "botframework.com") + "/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, "scope": scope}
    async with http.post(url, data=form) as response:
        return response.status, await response.json()


async def token(http: aiohttp.ClientSession, teams: TeamsStandIn, scope: str = BOTFRAMEWORK_SCOPE) -> str:
    tenant = teams.tenant_id if scope == GRAPH_SCOPE else None
    status, body = await login(http, teams, scope, tenant=tenant)
    assert status == 200, body
    return str(body["access_token"])


class Client:
    """A bearer-authenticated JSON client for one service base URL."""

    def __init__(self, http: aiohttp.ClientSession, base: str, bearer: str | None) -> None:
        self.http, self.base, self.bearer = http, base, bearer

    async def __call__(self, method: str, path: str, body: Any = None, **params: Any) -> tuple[int, Any, Any]:
        headers = {"Authorization": f"Bearer {self.bearer}"} if self.bearer else {}
        async with self.http.request(method, self.base + path, json=body, headers=headers,
                                     params=params or None) as response:
            payload = await response.json() if response.content_type == "application/json" else None
            return response.status, payload, response.headers


def quoted(conversation_id: str) -> str:
    """Path segments as msrest writes them: everything percent-encoded."""
    return urllib.parse.quote(conversation_id, safe="")


@pytest.fixture
async def connector(http: aiohttp.ClientSession, teams: TeamsStandIn) -> Client:
    return Client(http, teams.service_url, await token(http, teams))


@pytest.fixture
async def graph(http: aiohttp.ClientSession, teams: TeamsStandIn) -> Client:
    return Client(http, teams.graph_url, await token(http, teams, GRAPH_SCOPE))


def message(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"type": "message", "text": text, **extra}


def card(version: str = "1.5", body: Any = None, kind: str = "AdaptiveCard") -> dict[str, Any]:
    content = {"type": kind, "version": version,
               "body": [{"type": "TextBlock", "text": "Deal"}] if body is None else body}
    return {"type": "message", "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive",
                                                "content": content}]}


def bind(aad_id: str, *roles: str) -> dict[str, Any]:
    return {"@odata.type": "#microsoft.graph.aadUserConversationMember", "roles": list(roles),
            "user@odata.bind": f"https://graph.microsoft.com/v1.0/users('{aad_id}')"}


# -- login and auth ------------------------------------------------------------------------------


async def test_login_issues_tokens_by_tenant_and_scope(http: aiohttp.ClientSession, teams: TeamsStandIn) -> None:
    status, body = await login(http, teams, BOTFRAMEWORK_SCOPE)
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] == 3599 and body["access_token"]
    assert (await login(http, teams, BOTFRAMEWORK_SCOPE, secret="wrong"))[1]["error"] == "invalid_client"
    status, body = await login(http, teams, BOTFRAMEWORK_SCOPE, client_id="someone-else")
    assert (status, body["error"]) == (401, "invalid_client")
    status, body = await login(http, teams, "https://example.com/.default")
    assert (status, body["error"]) == (400, "invalid_scope")
    status, body = await login(http, teams, GRAPH_SCOPE)  # Graph needs the real tenant
    assert (status, body["error"]) == (400, "invalid_request")
    status, body = await login(http, teams, GRAPH_SCOPE, tenant="contoso.onmicrosoft.com")
    assert (status, body["error"]) == (400, "invalid_tenant") and "AADSTS90002" in body["error_description"]
    assert (await login(http, teams, GRAPH_SCOPE, tenant=teams.tenant_id))[0] == 200
    assert (await login(http, teams, BOTFRAMEWORK_SCOPE, tenant=teams.tenant_id))[0] == 200  # single-tenant bots
    assert teams.token_requests[0] == ("botframework.com", BOTFRAMEWORK_SCOPE)
    assert teams.token_requests[-2] == (teams.tenant_id, GRAPH_SCOPE) and len(teams.token_requests) == 8


async def test_each_service_wants_a_token_for_its_own_scope(http: aiohttp.ClientSession, teams: TeamsStandIn) -> None:
    bf, graph_token = await token(http, teams), await token(http, teams, GRAPH_SCOPE)
    status, body, _ = await Client(http, teams.service_url, None)("GET", f"v3/conversations/{quoted(GENERAL_ID)}/members")
    assert (status, body["error"]["code"]) == (401, "Unauthorized")
    status, body, _ = await Client(http, teams.service_url, graph_token)("POST", "v3/conversations", {})
    assert (status, body["error"]["code"]) == (401, "Unauthorized")
    status, body, _ = await Client(http, teams.graph_url, bf)("GET", "users/u-ann")
    assert (status, body["error"]["code"]) == (401, "InvalidAuthenticationToken")
    assert (await Client(http, teams.graph_url, graph_token)("GET", "users/u-ann"))[0] == 200
    teams.expire_tokens()
    assert (await Client(http, teams.graph_url, graph_token)("GET", "users/u-ann"))[0] == 401


async def test_signed_tokens_verify_against_the_published_keys(http: aiohttp.ClientSession, teams: TeamsStandIn) -> None:
    # botbuilder reads the metadata with blocking `requests` from inside the event loop: must not hang.
    metadata = requests.get(teams.openid_metadata_url, timeout=5).json()
    assert metadata["issuer"] == "https://api.botframework.com"
    async with http.get(metadata["jwks_uri"]) as response:
        (key,) = (await response.json())["keys"]
    assert key["kid"] == teams.kid and key["use"] == "sig" and "msteams" in key["endorsements"]
    public = jwt.PyJWK(key)
    token = teams.sign("https://smba.example/teams/")
    assert jwt.get_unverified_header(token)["kid"] == key["kid"]
    claims = jwt.decode(token, public, algorithms=["RS256"], audience=APP_ID, issuer=metadata["issuer"])
    assert claims["serviceurl"] == "https://smba.example/teams/" and claims["nbf"] < claims["exp"]
    assert jwt.decode(teams.sign(), public, algorithms=["RS256"], audience=APP_ID)["serviceurl"] == teams.service_url
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(teams.sign(foreign_key=True), public, algorithms=["RS256"], audience=APP_ID)
    with pytest.raises(jwt.ExpiredSignatureError):
        jwt.decode(teams.sign(expires_in=-60), public, algorithms=["RS256"], audience=APP_ID)
    with pytest.raises(jwt.InvalidAudienceError):
        jwt.decode(teams.sign(audience="other-app"), public, algorithms=["RS256"], audience=APP_ID)
    assert jwt.get_unverified_header(teams.sign(kid="unknown"))["kid"] == "unknown"
    assert [c.path for c in teams.called("openid")] == ["/openid/.well-known/openidconfiguration", "/openid/keys"]


# -- Graph ---------------------------------------------------------------------------------------


async def test_graph_channels_and_the_taken_name(graph: Client, teams: TeamsStandIn) -> None:
    status, created, _ = await graph("POST", "teams/team-1/channels",
                                     {"displayName": "deal-acme", "description": "Acme renewal"})
    assert status == 201 and created["membershipType"] == "standard" and created["id"].endswith("@thread.tacv2")
    assert teams.channel_by_name("DEAL-ACME") is teams.channels[created["id"]]
    status, body, _ = await graph("POST", "teams/team-1/channels", {"displayName": "Deal-Acme"})
    assert status == 409 and body["error"] == {"code": "NameAlreadyExists",
                                               "message": "Channel name already existed, please use other name."}
    status, listed, _ = await graph("GET", "teams/team-1/channels", **{"$filter": "displayName eq 'deal-acme'"})
    assert [c["id"] for c in listed["value"]] == [created["id"]]
    status, listed, _ = await graph("GET", "teams/team-1/channels", **{"$filter": "displayName eq 'O''Brien'"})
    assert (status, listed["value"]) == (200, [])  # quotes are doubled inside; no channel may hold one
    assert (await graph("GET", "teams/team-1/channels", **{"$filter": "startswith(displayName, 'd')"}))[0] == 400
    assert (await graph("POST", "teams/team-1/channels", {"displayName": "deal-beta"}))[0] == 201
    assert len((await graph("GET", "teams/team-1/channels"))[1]["value"]) == 3
    path = f"teams/team-1/channels/{quoted(created['id'])}"
    assert (await graph("PATCH", path, {"displayName": "DEAL-beta"}))[0] == 409
    assert (await graph("PATCH", path, {"displayName": "deal-acme-won", "description": "Won"}))[0] == 204
    assert (await graph("GET", path))[1]["displayName"] == "deal-acme-won"
    assert (await graph("PATCH", path, {"description": "x" * 1025}))[0] == 400
    status, body, _ = await graph("PATCH", f"teams/team-1/channels/{quoted(GENERAL_ID)}", {"displayName": "Main"})
    assert status == 400 and "General" in body["error"]["message"]
    assert (await graph("DELETE", path))[0] == 204 and teams.channels[created["id"]].deleted
    status, body, _ = await graph("GET", path)
    assert (status, body["error"]["code"]) == (404, "NotFound")
    assert (await graph("GET", "teams/other-team/channels"))[0] == 404


async def test_graph_channel_name_rules(graph: Client, teams: TeamsStandIn) -> None:
    rules = [("", "required"), ("x" * 51, "50"), ("deal #1", "#"), ("a/b", "/"), ('say "hi"', '"'),
             ("O'Brien", "'"), ("_hidden", "start"), (".dot", "start"), ("ends.", "end")]
    for name, rule in rules:
        status, body, _ = await graph("POST", "teams/team-1/channels", {"displayName": name})
        assert status == 400 and body["error"]["code"] == "BadRequest" and rule in body["error"]["message"], name
    assert (await graph("POST", "teams/team-1/channels", {"displayName": "x" * 50}))[0] == 201
    assert len(teams.channels) == 2


async def test_private_channels_need_team_members_and_an_owner(graph: Client, teams: TeamsStandIn) -> None:
    async def create(members: Any, membership: str = "private") -> tuple[int, Any, Any]:
        return await graph("POST", "teams/team-1/channels",
                           {"displayName": "deal-private", "membershipType": membership, "members": members})

    assert (await create(None))[0] == 400
    status, body, _ = await create([bind("u-ann")])
    assert status == 400 and "owner" in body["error"]["message"]
    status, body, _ = await create([bind("u-ann", "owner"), bind("u-cy")])
    assert status == 400 and "not a member of the team" in body["error"]["message"]
    assert (await create([bind("u-ann", "owner")], "standard"))[0] == 400
    assert not teams.channel_by_name("deal-private")
    status, created, _ = await create([bind("u-ann", "owner")])
    assert status == 201 and created["membershipType"] == "private"
    members_path = f"teams/team-1/channels/{quoted(created['id'])}/members"
    assert (await graph("POST", members_path, bind("u-bob")))[0] == 201
    assert (await graph("POST", members_path, bind("u-bob")))[1]["error"]["code"] == "Conflict"
    assert (await graph("POST", members_path, bind("u-cy")))[0] == 400
    _, listed, _ = await graph("GET", members_path)
    assert {(m["userId"], tuple(m["roles"])) for m in listed["value"]} == {("u-ann", ("owner",)), ("u-bob", ())}
    assert teams.channels[created["id"]].members == {"u-ann", "u-bob"}
    general_members = f"teams/team-1/channels/{quoted(GENERAL_ID)}/members"
    assert (await graph("POST", general_members, bind("u-bob")))[0] == 400
    assert {m["userId"] for m in (await graph("GET", general_members))[1]["value"]} == {"u-ann", "u-bob"}


async def test_graph_users_and_team_members(graph: Client, teams: TeamsStandIn) -> None:
    status, user, _ = await graph("GET", f"users/{quoted('ann@EXAMPLE.com')}")
    assert status == 200 and user["id"] == "u-ann" and user["userPrincipalName"] == "Ann@Example.com"
    status, body, _ = await graph("GET", "users/nobody@example.com")
    assert (status, body["error"]["code"]) == (404, "Request_ResourceNotFound")
    assert (await graph("POST", "teams/team-1/members", bind("u-cy")))[0] == 201
    assert (await graph("POST", "teams/team-1/members", bind("u-cy")))[0] == 409
    assert "u-cy" in teams.team_members
    assert {m["userId"] for m in (await graph("GET", "teams/team-1/members"))[1]["value"]} == {"u-ann", "u-bob", "u-cy"}


async def test_throttle_graph_and_fail_next_change_nothing(graph: Client, teams: TeamsStandIn) -> None:
    teams.throttle_graph(2, retry_after=3)
    for _ in range(2):
        status, body, headers = await graph("POST", "teams/team-1/channels", {"displayName": "deal-x"})
        assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "TooManyRequests", "3")
    teams.fail_next("graph", "POST", "/channels", 503)
    assert (await graph("POST", "teams/team-1/channels", {"displayName": "deal-x"}))[0] == 503
    assert teams.channel_by_name("deal-x") is None
    assert (await graph("POST", "teams/team-1/channels", {"displayName": "deal-x"}))[0] == 201
    assert [c.status for c in teams.called("graph", "POST", "/channels")] == [429, 429, 503, 201]
    assert teams.called("graph")[0].body == {"displayName": "deal-x"}


# -- connector -----------------------------------------------------------------------------------


async def test_channel_posts_start_threads_and_replies_join_them(connector: Client, teams: TeamsStandIn) -> None:
    params = {"isGroup": True, "channelData": {"channel": {"id": GENERAL_ID}}, "activity": message("kick-off")}
    status, created, _ = await connector("POST", "v3/conversations", params)
    thread = created["id"]
    assert status == 201 and thread == f"{GENERAL_ID};messageid={created['activityId']}"
    _, sent, _ = await connector("POST", f"v3/conversations/{quoted(GENERAL_ID)}/activities", message("second"))
    assert [m.text for m in teams.thread_messages(GENERAL_ID)] == ["kick-off", "second"]
    assert int(sent["id"]) > int(created["activityId"])
    _, reply, _ = await connector("POST", f"v3/conversations/{quoted(thread)}/activities", message("in thread"))
    person = teams.add_message(thread, "u-ann", "<at>Dealbot</at> log it")
    _, answer, _ = await connector("POST", f"v3/conversations/{quoted(thread)}/activities/{person.id}",
                                   message("logged"))
    assert [(m.text, m.from_bot, m.reply_to) for m in teams.messages(thread)] == [
        ("kick-off", True, None), ("in thread", True, created["activityId"]),
        ("<at>Dealbot</at> log it", False, created["activityId"]), ("logged", True, person.id)]
    incoming = teams.incoming_activity(person)
    assert incoming["conversation"]["id"] == thread and incoming["from"]["id"] == "29:u-ann"
    assert incoming["entities"][0]["mentioned"]["id"] == "28:" + APP_ID
    status, body, _ = await connector("POST", "v3/conversations/19%3Anope%40thread.tacv2/activities", message())
    assert (status, body["error"]["code"]) == (404, "ConversationNotFound")
    status, body, _ = await connector("POST", "v3/conversations", {"channelData": {"channel": {"id": "19:x"}},
                                                                  "activity": message()})
    assert (status, body["error"]["code"]) == (404, "ConversationNotFound")

    path = f"v3/conversations/{quoted(thread)}/activities"
    assert (await connector("PUT", f"{path}/{reply['id']}", message("edited")))[1] == {"id": reply["id"]}
    assert (await connector("PUT", f"{path}/{person.id}", message("hijack")))[0] == 403
    assert (await connector("PUT", f"{path}/1", message("x")))[1]["error"]["code"] == "ActivityNotFound"
    assert (await connector("DELETE", f"{path}/{answer['id']}"))[0] == 200
    assert (await connector("DELETE", f"{path}/{answer['id']}"))[0] == 404
    edited, deleted = teams.messages(thread)[1], teams.messages(thread)[3]
    assert (edited.text, edited.updated_count, deleted.deleted) == ("edited", 1, True)


async def test_one_to_one_chats(connector: Client, teams: TeamsStandIn) -> None:
    params = {"bot": {"id": "28:" + APP_ID}, "members": [{"id": "29:u-ann"}], "tenantId": teams.tenant_id,
              "channelData": {"tenant": {"id": teams.tenant_id}}, "isGroup": False}
    status, first, _ = await connector("POST", "v3/conversations", params)
    assert status == 201 and first == {"id": "a:u-ann"}
    _, again, _ = await connector("POST", "v3/conversations", {**params, "members": [{"id": "u-ann"}],
                                                              "activity": message("hi Ann")})
    assert again["id"] == "a:u-ann" and teams.messages("a:u-ann")[0].id == again["activityId"]
    assert (await connector("POST", "v3/conversations/a%3Au-ann/activities", message("again")))[0] == 201
    assert [m.text for m in teams.messages("a:u-ann")] == ["hi Ann", "again"]
    for members, group in ([{"id": "29:nobody"}], False), ([{"id": "u-ann"}, {"id": "u-bob"}], False):
        status, body, _ = await connector("POST", "v3/conversations", {**params, "members": members, "isGroup": group})
        assert (status, body["error"]["code"]) == (400, "BadArgument")
    assert (await connector("POST", "v3/conversations/a%3Au-bob/activities", message()))[0] == 404


async def test_conversation_members(connector: Client, teams: TeamsStandIn) -> None:
    private = teams.add_channel("deal-secret", membership="private", members=["u-bob"])
    for extra in range(5):
        teams.add_user(f"u-{extra}", f"user{extra}@example.com", f"User {extra}")
    _, members, _ = await connector("GET", f"v3/conversations/{quoted(GENERAL_ID)}/members")
    assert len(members) == 7 and members[0] == {
        "id": "29:u-ann", "name": "Ann Rep", "aadObjectId": "u-ann", "email": "Ann@Example.com",
        "userPrincipalName": "Ann@Example.com", "tenantId": "tenant-1", "userRole": "user"}
    _, members, _ = await connector("GET", f"v3/conversations/{quoted(private)}/members")
    assert [m["id"] for m in members] == ["29:u-bob"]
    assert (await connector("GET", f"v3/conversations/{quoted(private)}/members/u-bob"))[1]["name"] == "Bob Manager"
    status, body, _ = await connector("GET", f"v3/conversations/{quoted(private)}/members/29%3Au-ann")
    assert (status, body["error"]["code"]) == (404, "MemberNotFound")
    seen: list[str] = []
    continuation: str | None = None
    for _ in range(4):
        query = {"pageSize": 3, **({"continuationToken": continuation} if continuation else {})}
        _, page, _ = await connector("GET", f"v3/conversations/{quoted(GENERAL_ID)}/pagedmembers", **query)
        seen += [m["aadObjectId"] for m in page["members"]]
        continuation = page.get("continuationToken")
        if continuation is None:
            break
    assert seen == ["u-ann", "u-bob", "u-0", "u-1", "u-2", "u-3", "u-4"]
    teams.add_message("a:u-ann", "u-ann", "hello bot")
    assert [m["id"] for m in (await connector("GET", "v3/conversations/a%3Au-ann/members"))[1]] == ["29:u-ann"]


async def test_message_rules(connector: Client, teams: TeamsStandIn) -> None:
    path = f"v3/conversations/{quoted(GENERAL_ID)}/activities"

    async def refused(activity: dict[str, Any]) -> tuple[int, str, str]:
        status, body, _ = await connector("POST", path, activity)
        return status, body["error"]["code"], body["error"].get("message", "")

    assert (await refused({"type": "message"}))[:2] == (400, "BadArgument")
    status, code, why = await refused(card(version="1.6"))
    assert (status, code) == (400, "BadArgument") and "1.6" in why
    assert "AdaptiveCard" in (await refused(card(kind="Card")))[2]
    assert "body" in (await refused(card(body="nope")))[2]
    big = card(body=[{"type": "TextBlock", "text": "x" * 1000}] * 30)
    assert (await refused(big))[:2] == (413, "MessageSizeTooBig")
    assert (await connector("POST", path, card()))[0] == 201
    assert (await connector("POST", path, {"type": "typing"}))[0] == 201
    assert len(teams.thread_messages(GENERAL_ID)) == 1


async def test_connector_rate_limit_per_conversation(connector: Client, teams: TeamsStandIn) -> None:
    path = f"v3/conversations/{quoted(GENERAL_ID)}/activities"
    statuses = [(await connector("POST", path, message(f"m{i}")))[0] for i in range(7)]
    status, body, headers = await connector("POST", path, message("one too many"))
    assert statuses == [201] * 7 and (status, body["error"]["code"]) == (429, "Throttled")
    assert int(headers["Retry-After"]) >= 1
    assert len(teams.thread_messages(GENERAL_ID)) == 7
    other = teams.add_channel("deal-other")
    assert (await connector("POST", f"v3/conversations/{quoted(other)}/activities", message()))[0] == 201
    teams.rate_limits = [(100, 1.0), (2, 30.0)]  # the 30 s window, shrunk so the test stays fast
    await connector("POST", f"v3/conversations/{quoted(other)}/activities", message())
    status, _, headers = await connector("POST", f"v3/conversations/{quoted(other)}/activities", message())
    assert status == 429 and 28 <= int(headers["Retry-After"]) <= 30


async def test_fail_next_answers_without_side_effects(connector: Client, teams: TeamsStandIn) -> None:
    path = f"v3/conversations/{quoted(GENERAL_ID)}/activities"
    teams.fail_next("connector", "POST", "/activities", 502, times=2)
    teams.fail_next("connector", "POST", "/activities", 429, retry_after=2)
    assert (await connector("POST", path, message()))[0] == 502
    assert (await connector("POST", path, message()))[0] == 502
    status, body, headers = await connector("POST", path, message())
    assert (status, body["error"]["code"], headers["Retry-After"]) == (429, "Throttled", "2")
    assert teams.thread_messages(GENERAL_ID) == []
    assert (await connector("POST", path, message()))[0] == 201
    calls = teams.called("connector", "POST", f"{GENERAL_ID}/activities")
    assert [c.status for c in calls] == [502, 502, 429, 201] and calls[-1].body == message()


async def test_stand_ins_are_independent_and_close_cleanly() -> None:
    async with TeamsStandIn(APP_ID, APP_PASSWORD) as one, TeamsStandIn(APP_ID, APP_PASSWORD) as two:
        assert one.base_url != two.base_url and one.kid != two.kid
        assert one.login_url.endswith("/login/botframework.com") and one.graph_url.endswith("/graph/v1.0/")
    await asyncio.sleep(0)
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as session, session.get(one.openid_metadata_url):
            pass
