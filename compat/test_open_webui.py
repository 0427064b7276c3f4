"""open-webui 0.12.4, unmodified, wrapped by the middleware: driven as its frontend drives it.

Each scenario is one test, as short as it can be while meaningful. Token counts and rates are
small (a few seconds per stream); the fake model's default (300 at 30/s) is for manual runs.
Numbers go into the assertion messages, so a failure says what was seen.
"""

from __future__ import annotations

import statistics
import time
import uuid

import pytest
import redis.asyncio as aioredis

from compat.support import (
    FakeModel,
    Frame,
    OpenWebUI,
    Tab,
    assemble,
    delta,
    expected_text,
    is_finished,
    is_input_request,
    kind,
    latencies,
    output_text,
    percentile,
    seq_problems,
    token_problems,
)

pytestmark = pytest.mark.anyio


def marker(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:8]}"


def finished(message_id: str, shared: bool = False):  # type: ignore[no-untyped-def]
    return lambda frames: any(
        f.data.get("message_id") == message_id and f.shared == shared and is_finished(f) for f in frames
    )


def token_count(tab: Tab, message_id: str) -> int:
    return sum(1 for f in tab.stream(message_id) if delta(f) is not None)


def last_seq(frames: list[Frame]) -> int:
    return max((f.seq for f in frames if f.seq is not None), default=0)


def fail_if(problems: list[str], what: str) -> None:
    assert not problems, f"{what}: " + "; ".join(problems)


async def test_a_one_tab_every_frame_stamped(server: OpenWebUI, model: FakeModel) -> None:
    tokens = 30
    model.configure(tokens, 60)
    owner = server.users["owner"]
    tab = await Tab(server, owner, "tab").connect()
    try:
        chat = await server.new_chat(owner)
        await tab.join(chat)
        run = await server.complete(owner, tab, chat, marker("a"))
        await tab.wait_for(finished(run.message_id), 60, "end of the completion")
        frames = tab.stream(run.message_id)
        fail_if(seq_problems(frames) + token_problems(frames, tokens), f"one tab, {len(frames)} frames")
    finally:
        await tab.close()


async def test_b_drop_and_resume(server: OpenWebUI, model: FakeModel) -> None:
    tokens = 40
    model.configure(tokens, 20)
    owner = server.users["owner"]
    text = marker("b")
    tab = await Tab(server, owner, "tab").connect()
    chat = await server.new_chat(owner)
    await tab.join(chat)
    run = await server.complete(owner, tab, chat, text)
    await tab.wait_for(lambda _: token_count(tab, run.message_id) >= 10, 30, "10 tokens")
    tab.drop()
    before = tab.stream(run.message_id)
    seen = last_seq(before)
    await model.wait_sent(text, 25)  # frames emitted while nobody is connected
    again = await Tab(server, owner, "reloaded").connect()
    try:
        await again.join(chat)
        answer = await again.resume(run.message_id, seen)
        assert (answer.get("ok"), answer.get("gap")) == (True, False), f"resume after last_seq {seen}: {answer}"
        await again.wait_for(finished(run.message_id), 60, "end of the completion")
        frames, problems = assemble(before, seen, again.stream(run.message_id))
        fail_if(
            seq_problems(before) + problems + token_problems(frames, tokens),
            f"drop at seq {seen}, resume answered {answer}",
        )
    finally:
        await tab.close()
        await again.close()


async def _two_tabs(server: OpenWebUI, model: FakeModel, tokens: int) -> tuple[Tab, Tab, str, list[float]]:
    owner = server.users["owner"]
    text = marker("c")
    a = await Tab(server, owner, "requesting tab").connect()
    b = await Tab(server, owner, "second tab").connect()
    chat = await server.new_chat(owner)
    await a.join(chat)
    await b.join(chat)
    run = await server.complete(owner, a, chat, text)
    await a.wait_for(finished(run.message_id), 60, "end of the completion")
    await b.wait_for(finished(run.message_id), 60, "end of the completion (own view)")
    await b.wait_for(finished(run.message_id, shared=True), 60, "end of the completion (shared view)")
    sent = await model.sent(text)
    await a.close()
    await b.close()
    return a, b, run.message_id, sent


async def test_c_two_tabs_stamped_views_and_latency(server: OpenWebUI, bare: OpenWebUI, model: FakeModel) -> None:
    tokens = 90
    model.configure(tokens, 30)
    ba, bb, bmid, bsent = await _two_tabs(bare, model, tokens)
    a, b, mid, sent = await _two_tabs(server, model, tokens)

    problems = []
    for tab in (a, b):
        own = tab.stream(mid)
        problems += [f"{tab.name} own view: {p}" for p in seq_problems(own) + token_problems(own, tokens)]
    shared = b.stream(mid, shared=True)
    problems += [f"second tab shared view: {p}" for p in seq_problems(shared)]
    done = [f for f in shared if kind(f) == "chat:completion" and output_text(f)]
    if not done or output_text(done[-1]).strip() != expected_text(tokens).strip():
        problems.append(f"shared view's last output is not the whole answer: {output_text(done[-1])[-40:]!r}")
    if a.stream(mid, shared=True):
        problems.append(f"the requesting tab got {len(a.stream(mid, shared=True))} shared frames (open-webui skips it)")

    lines = []
    for name, (wrapped_tab, bare_tab) in {"requesting": (a, ba), "second": (b, bb)}.items():
        w = latencies(wrapped_tab.stream(mid), sent)
        r = latencies(bare_tab.stream(bmid), bsent)
        w99, r99 = percentile(w, 99), percentile(r, 99)
        lines.append(
            f"{name} tab p50/p99 wrapped {statistics.median(w):.1f}/{w99:.1f} ms, "
            f"bare {statistics.median(r):.1f}/{r99:.1f} ms ({len(w)}/{len(r)} tokens)"
        )
        if not w99 <= r99 + 10:
            problems.append(f"{name} tab token latency p99 {w99:.1f} ms > bare {r99:.1f} ms + 10")
    print("\n".join(lines))
    fail_if(problems, "two tabs [" + "; ".join(lines) + "]")


async def _share_with(server: OpenWebUI, chat: str, viewer_id: str) -> None:
    """open-webui's live sharing: a share in 'continue' mode plus a read grant to the viewer. Then
    ``Chats.get_accessible_chat_by_id`` (models/chats.py) lets the viewer join ``chat:{id}``."""
    owner = server.users["owner"]
    await server.api(owner.token, "POST", f"/api/v1/chats/{chat}/share", {"share_mode": "continue"})
    grants = [{"principal_type": "user", "principal_id": viewer_id, "permission": "read"}]
    await server.api(
        owner.token,
        "POST",
        f"/api/v1/chats/shared/{chat}/access/update",
        {"access_grants": grants, "share_mode": "continue"},
    )


async def test_d_other_user_watching_shared_chat(server: OpenWebUI, model: FakeModel) -> None:
    tokens = 40
    model.configure(tokens, 20)
    owner, bob = server.users["owner"], server.users["bob"]
    text = marker("d")
    chat = await server.new_chat(owner)
    await _share_with(server, chat, bob.id)
    a = await Tab(server, owner, "owner tab").connect()
    watcher = await Tab(server, bob, "bob").connect()
    again = Tab(server, bob, "bob reloaded")
    try:
        await a.join(chat)
        await watcher.join(chat)
        run = await server.complete(owner, a, chat, text)
        await watcher.wait_for(lambda _: len(watcher.stream(run.message_id, shared=True)) >= 4, 30, "4 shared frames")
        watcher.drop()
        before = watcher.stream(run.message_id, shared=True)
        seen = last_seq(before)
        await model.wait_sent(text, 30)
        await again.connect()
        await again.join(chat)
        # the client names the view it follows: bob only ever had the shared one
        answer = await again.resume(run.message_id, seen, variant="true")
        await again.wait_for(finished(run.message_id, shared=True), 60, "end of the completion")
        after = again.stream(run.message_id, shared=True)
        frames, problems = assemble(before, seen, after)
        own = again.stream(run.message_id, shared=False) + watcher.stream(run.message_id, shared=False)
        if own:
            problems.append(f"bob got {len(own)} frames of the owner's own view")
        last_output = [output_text(f) for f in frames if output_text(f)]
        if not last_output or last_output[-1].strip() != expected_text(tokens).strip():
            problems.append(f"bob's last output is not the whole answer: {(last_output or [''])[-1][-40:]!r}")
        ok = answer.get("ok") is True and answer.get("gap") is False
        fail_if(
            ([] if ok else [f"resume answered {answer}"]) + [f"live: {p}" for p in seq_problems(before)] + problems,
            f"bob watching the owner's shared chat ({len(before)} live shared frames, drop at seq {seen})",
        )
    finally:
        for tab in (a, watcher, again):
            await tab.close()


async def test_e_fresh_login_resumes(server: OpenWebUI, model: FakeModel) -> None:
    tokens = 40
    model.configure(tokens, 20)
    owner = server.users["owner"]
    text = marker("e")
    tab = await Tab(server, owner, "tab").connect()
    chat = await server.new_chat(owner)
    await tab.join(chat)
    run = await server.complete(owner, tab, chat, text)
    await tab.wait_for(lambda _: token_count(tab, run.message_id) >= 10, 30, "10 tokens")
    tab.drop()
    before = tab.stream(run.message_id)
    seen = last_seq(before)
    login = server.signin("owner")  # a new JWT: new jti, same id claim
    assert login.token != owner.token
    assert login.id == owner.id
    again = await Tab(server, login, "after login").connect()
    try:
        await again.join(chat)
        answer = await again.resume(run.message_id, seen)
        assert answer.get("ok") is True, f"a fresh login of the same user resuming after seq {seen}: {answer}"
        await again.wait_for(finished(run.message_id), 60, "end of the completion")
        frames, problems = assemble(before, seen, again.stream(run.message_id))
        fail_if(problems + token_problems(frames, tokens), f"fresh login, resume answered {answer}")
    finally:
        await tab.close()
        await again.close()


async def test_f_other_user_cannot_replay(server: OpenWebUI, model: FakeModel) -> None:
    tokens = 60
    model.configure(tokens, 20)
    owner, mallory = server.users["owner"], server.users["mallory"]
    a = await Tab(server, owner, "owner tab").connect()
    m = await Tab(server, mallory, "mallory").connect()
    again = Tab(server, owner, "owner replay")
    try:
        chat = await server.new_chat(owner)
        await a.join(chat)
        run = await server.complete(owner, a, chat, marker("f-owner"))
        await a.wait_for(lambda _: token_count(a, run.message_id) >= 5, 30, "5 tokens")
        joined = await m.client.call("events:chat", {"chat_id": chat, "data": {"type": "join"}}, timeout=15)
        assert joined is not True, "open-webui let mallory join the owner's chat: the scenario is moot"
        first = await m.resume(run.message_id, 0)
        assert first.get("ok") is False, f"mallory replaying the owner's live stream: {first}"

        # her own completion, in her own chat, under the owner's message id
        model.configure(8, 50)
        her_chat = await server.new_chat(mallory)
        await m.join(her_chat)
        await server.complete(mallory, m, her_chat, marker("f-mallory"), message_id=run.message_id)
        await m.wait_for(
            lambda fs: any(f.data.get("chat_id") == her_chat and is_finished(f) for f in fs), 60, "her end"
        )
        replay = Tab(server, mallory, "mallory replay")
        await replay.connect()
        try:
            second = await replay.resume(run.message_id, 0)
            leaked = [f for f in replay.stream(run.message_id, shared=None) if f.data.get("chat_id") == chat]
        finally:
            await replay.close()
        assert not leaked, (
            f"mallory's resume after her own completion under the same id: {second}, "
            f"{len(leaked)} frames of the owner's chat replayed to her"
        )

        await a.wait_for(finished(run.message_id), 60, "end of the owner's completion")
        await again.connect()
        answer = await again.resume(run.message_id, 0)
        replayed = again.stream(run.message_id, shared=None)
        foreign = [f for f in replayed if f.data.get("chat_id") != chat]
        problems = seq_problems(replayed) + token_problems(replayed, tokens)
        if foreign:
            problems.append(f"{len(foreign)} of mallory's frames in the owner's replay")
        if answer.get("ok") is not True:
            problems.append(f"owner's replay answered {answer}")
        fail_if(
            problems, f"owner's replay from 0 after mallory's completion under the same id ({len(replayed)} frames)"
        )
    finally:
        for tab in (a, m, again):
            await tab.close()


ASK_FILTER = '''"""
title: compat ask
description: asks the user a question (an __event_call__ input request) when the message says [ask]
"""


class Filter:
    async def inlet(self, body: dict, __event_call__=None) -> dict:
        messages = body.get("messages") or []
        text = str(messages[-1].get("content")) if messages else ""
        if "[ask]" in text and __event_call__ is not None:
            await __event_call__(
                {"type": "input", "data": {"title": "compat", "message": "Go on?", "placeholder": "yes"}}
            )
        return body
'''


async def _install_ask_filter(server: OpenWebUI) -> None:
    """A global, active filter function whose inlet calls ``__event_call__({type: input})``."""
    token = server.users["owner"].token
    existing = await server.api(token, "GET", "/api/v1/functions/")
    if any(f["id"] == "compat_ask" for f in existing):
        return
    form = {"id": "compat_ask", "name": "compat ask", "content": ASK_FILTER, "meta": {"description": "compat"}}
    await server.api(token, "POST", "/api/v1/functions/create", form)
    state = await server.api(token, "POST", "/api/v1/functions/id/compat_ask/toggle")
    if not state.get("is_active"):
        state = await server.api(token, "POST", "/api/v1/functions/id/compat_ask/toggle")
    state = await server.api(token, "POST", "/api/v1/functions/id/compat_ask/toggle/global")
    if not state.get("is_global"):
        state = await server.api(token, "POST", "/api/v1/functions/id/compat_ask/toggle/global")
    assert (state.get("is_active"), state.get("is_global")) == (True, True), state


async def _input_resend_time(server: OpenWebUI, model: FakeModel) -> float:
    """Seconds between the requesting tab dropping and the question reaching the user's other session."""
    await _install_ask_filter(server)
    owner = server.users["owner"]
    a = await Tab(server, owner, "requesting tab").connect()
    b = await Tab(server, owner, "other session").connect()
    a.answer_inputs = False
    try:
        chat = await server.new_chat(owner)
        await a.join(chat)
        await b.join(chat)
        run = await server.complete(owner, a, chat, marker("[ask] g"))
        await a.wait_for(lambda fs: any(is_input_request(f.data) for f in fs), 30, "input request")
        assert not any(is_input_request(f.data) for f in b.frames), "the question went to both sessions at once"
        a.drop()
        dropped = time.time()
        await b.wait_for(lambda fs: any(is_input_request(f.data) for f in fs), 90, "re-sent input request")
        arrived = next(f.at for f in b.frames if is_input_request(f.data))
        await b.wait_for(finished(run.message_id), 60, "end of the completion after the answer")
        return arrived - dropped
    finally:
        await a.close()
        await b.close()


async def test_g_input_request_resent_to_other_session(server: OpenWebUI, bare: OpenWebUI, model: FakeModel) -> None:
    model.configure(10, 50)
    bare_s = await _input_resend_time(bare, model)
    wrapped_s = await _input_resend_time(server, model)
    print(f"input request re-sent after a drop: bare {bare_s:.2f} s, wrapped {wrapped_s:.2f} s")
    assert wrapped_s <= bare_s + 2, f"input request re-sent after {wrapped_s:.2f} s wrapped vs {bare_s:.2f} s bare"


@pytest.mark.parametrize("server", ["redis"], indirect=True)
async def test_h_redis_ttl_short_after_done(server: OpenWebUI, model: FakeModel, redis_server) -> None:  # type: ignore[no-untyped-def]
    done_ttl = 30
    model.configure(10, 50)
    owner = server.users["owner"]
    client = aioredis.from_url(redis_server.url, decode_responses=True)
    tab = await Tab(server, owner, "tab").connect()
    try:
        before = {k async for k in client.scan_iter("asgi_resume:*")}
        chat = await server.new_chat(owner)
        await tab.join(chat)
        run = await server.complete(owner, tab, chat, marker("h"))
        await tab.wait_for(finished(run.message_id), 60, "end of the completion")
        new = {k async for k in client.scan_iter("asgi_resume:*")} - before
        keys = [k for k in new if run.message_id in k]
        if not keys:  # stream keys hashed: every new key but the user message's and per-session ones
            keys = [k for k in new if run.user_message_id not in k and ":r" not in k.rsplit("}", 1)[-1]]
        ttls = {k: await client.ttl(k) for k in sorted(keys)}
        assert ttls, f"no keys of stream {run.message_id} in Redis; new keys: {sorted(new)}"
        long = {k: t for k, t in ttls.items() if not 0 < t <= done_ttl}
        assert not long, f"after done, keys with TTL not in (0, {done_ttl}] s: {long} (all: {ttls})"
    finally:
        await tab.close()
        await client.aclose()
