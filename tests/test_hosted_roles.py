"""Roles are enforced in the server: viewer and annotator call admin endpoints of the running app directly with
gradio_client (no UI, no hidden buttons) and are refused with a clear message, with nothing changed."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from gradio_client import Client

from ctllm.errors import UserError
from ctllm.models.registry import PRESETS, list_models, resolve_spec
from ctllm.settings import Settings
from tests.e2e.conftest import RunningApp, stop_app
from tests.hosted_app import AUTH_ENV, USERS, data_dir_with_a_pairs_file, start_hosted_app

TABLES = ("collections", "pairs", "labels", "jobs", "scores")

# endpoint -> arguments; each must be refused below the admin role.
ADMIN_CALLS = {
    "/import_pairs": {"upload": None, "path": "incoming.jsonl", "mapping_text": "", "collection": "intruder"},
    "/export_collection": {},
    "/train_start": {"data": "samples", "run_name": ""},
    "/train_cancel": {},
    "/train_resume": {},
}
# endpoint -> arguments; each must be refused for a viewer.
ANNOTATOR_CALLS = {
    **{f"/label_{verdict}": {"reason": ""} for verdict in ("first", "second", "tie", "both_bad", "skip")},
    "/label_undo": {},
    "/edit_pair": {"which": "first", "text": "edited"},
    "/add_pair": {"collection": "samples", "system": "", "prompt": "p", "chosen": "c", "rejected": "r"},
    "/chat_send": {"text": "hello", "sft_spec": "embedded", "dpo_spec": "embedded"},
    "/chat_vote_left": {},
}


def fake_hub_cache(root: Path, repo_id: str) -> Path:
    """A hub cache in which ``repo_id`` looks downloaded (its config.json only), so that offline the registry gets
    past "not in the local hub cache" to the remote-code decision without any network."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    tmp = tmp_path_factory.mktemp("hosted")
    data_dir = data_dir_with_a_pairs_file(tmp)
    hub = fake_hub_cache(tmp / "hub", PRESETS["ct-llm-sft"]["path"])
    running = start_hosted_app(tmp, {**AUTH_ENV, "HF_HUB_CACHE": str(hub)}, data_dir=data_dir)
    yield running
    stop_app(running)


def snapshot(data_dir: Path) -> dict[str, object]:
    """Row counts of the store's tables and every file under exports/ and runs/."""
    with sqlite3.connect(f"file:{data_dir / 'studio.sqlite'}?mode=ro", uri=True) as db:
        counts = {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in TABLES}
    files = sorted(str(p.relative_to(data_dir)) for sub in ("exports", "runs") for p in (data_dir / sub).rglob("*"))
    return {"counts": counts, "files": files}


def call(client: Client, api_name: str, args: dict[str, object]) -> str:
    """The error message of a refused call (a call that succeeds fails the test)."""
    try:
        result = client.predict(api_name=api_name, **args)
    except Exception as error:  # gradio_client raises AppError carrying the server's gr.Error message
        return str(error)
    pytest.fail(f"{api_name} succeeded: {str(result)[:300]}")


@pytest.mark.parametrize("user", ["viewer1", "annot1"])
def test_admin_actions_are_refused_and_change_nothing(app: RunningApp, user: str) -> None:
    client = Client(app.url, auth=(user, USERS[user]), verbose=False)
    role = "viewer" if user == "viewer1" else "annotator"
    before = snapshot(app.data_dir)
    for api_name, args in ADMIN_CALLS.items():
        message = call(client, api_name, args)
        assert f"needs the admin role; {user} is {role}" in message, (api_name, message)
    if user == "annot1":  # an annotator chats, but only with the models served: another one is an admin's choice
        args = {"text": "hi", "sft_spec": "someone/any-model", "dpo_spec": "embedded"}
        assert "only admins choose other models" in call(client, "/chat_send", args)
    if user == "viewer1":
        for api_name, args in ANNOTATOR_CALLS.items():
            message = call(client, api_name, args)
            assert "needs the annotator role; viewer1 is viewer" in message, (api_name, message)
    assert snapshot(app.data_dir) == before


def test_an_admin_import_goes_through(app: RunningApp) -> None:
    """The same call as admin changes the store, so the refusals above are not an artefact of the arguments."""
    client = Client(app.url, auth=("admin1", USERS["admin1"]), verbose=False)
    before = snapshot(app.data_dir)
    report = client.predict(api_name="/import_pairs", **ADMIN_CALLS["/import_pairs"])[0]
    assert "Imported" in report, report
    after = snapshot(app.data_dir)
    assert after["counts"]["pairs"] == before["counts"]["pairs"] + 1
    assert after["counts"]["collections"] == before["counts"]["collections"] + 1


# --- trust_remote_code: the operator's switch only -------------------------------------------------------------------


def test_presets_that_need_remote_code_are_refused_unless_the_operator_allows_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    online = settings.with_(offline=False)  # resolving never downloads: no network is touched either way
    for name in ("ct-llm-sft", "ct-llm-sft-dpo"):
        with pytest.raises(UserError) as refused:
            resolve_spec(name, online)
        assert "CTLLM_TRUST_REMOTE_CODE=1" in str(refused.value) and PRESETS[name]["path"] in str(refused.value)
        assert resolve_spec(name, online.with_(trust_remote_code=True)).trust_remote_code
    # Still offered in the pickers (choosing one explains), and no preset carries the permission by itself.
    offered = {spec.ref: spec for spec in list_models(online)}
    assert {"ct-llm-sft", "ct-llm-sft-dpo"} <= offered.keys()
    assert not any(spec.trust_remote_code for spec in offered.values())


def test_no_endpoint_lets_a_user_turn_remote_code_on(app: RunningApp) -> None:
    """Even an admin: no API parameter names it, and a chat with a preset that needs it is refused by the server
    with the operator's variable named (the app runs without CTLLM_TRUST_REMOTE_CODE)."""
    client = Client(app.url, auth=("admin1", USERS["admin1"]), verbose=False)
    api = client.view_api(all_endpoints=True, print_info=False, return_format="dict")
    for group in ("named_endpoints", "unnamed_endpoints"):
        for name, endpoint in api[group].items():
            for parameter in endpoint["parameters"]:
                described = json.dumps(parameter).lower()
                assert "remote" not in described and "trust" not in described, (name, parameter)
    outputs = client.predict(text="hi", sft_spec="ct-llm-sft", dpo_spec="embedded", max_new_tokens=4,
                             api_name="/chat_send")  # the left side: the SFT model, here ct-llm-sft
    shown = str(outputs).replace("\\", "")
    assert "needs trust_remote_code" in shown and "CTLLM_TRUST_REMOTE_CODE=1" in shown, shown


@pytest.mark.parametrize("user", ["viewer1", "annot1", "admin1"])
def test_synthesis_endpoints_are_for_admins_only(app: RunningApp, user: str) -> None:
    """Viewer and annotator are refused at /synth_start, /synth_cancel and /synth_resume with no job, folder or
    collection made; the admin's same start passes the role check and is stopped by the model check instead."""
    client = Client(app.url, auth=(user, USERS[user]), verbose=False)
    start = {"upload": None, "path": "incoming.jsonl", "collection": "intruder-synth", "weak": "no-such-model"}
    before = snapshot(app.data_dir)
    if user == "admin1":
        result = client.predict(api_name="/synth_start", **start)
        assert "Nothing started: weak model: unknown model 'no-such-model'" in str(result), result
    else:
        role = "viewer" if user == "viewer1" else "annotator"
        for api_name, args in (("/synth_start", start), ("/synth_cancel", {}), ("/synth_resume", {})):
            message = call(client, api_name, args)
            assert f"needs the admin role; {user} is {role}" in message, (api_name, message)
    assert snapshot(app.data_dir) == before and not (app.data_dir / "synth-jobs").exists()
