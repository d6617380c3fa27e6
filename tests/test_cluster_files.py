"""The cluster templates (cluster/): the Slurm array script and the Kubernetes Job parse,
keep what makes preemption safe (TERM reaches ferhpo, exit 143 is retried), and their
`ferhpo` command lines parse with the real argument parser, so an option renamed in
the CLI breaks this test rather than a night of cluster time."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, finish
from ferhpo.cli import build_parser
from ferhpo.cli.common import UsageError

SBATCH = REPO / "cluster" / "slurm" / "ferhpo-search.sbatch"
MANIFEST = REPO / "cluster" / "kubernetes" / "ferhpo-search-job.yaml"
FROM_ENV = "storage-from-FERHPO_STORAGE"

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this machine")


def check_search_line(argv: list[str], storage_from_env: tuple[str | None, ...]) -> None:
    """`argv` (after `ferhpo`) is a search the real parser accepts, with resume checkpoints
    and the storage URL left to $FERHPO_STORAGE."""
    args = build_parser().parse_args(argv)
    assert args.command == "search"
    assert isinstance(args.checkpoint_every, int) and args.checkpoint_every > 0
    assert args.storage in storage_from_env
    assert args.workers == 1, "one worker per GPU: each task or pod has one"


# --------------------------------------------------------------------------- Slurm


def sbatch_directives() -> list[str]:
    return [line.split(None, 1)[1] for line in SBATCH.read_text().splitlines() if line.startswith("#SBATCH ")]


def expand(text: str, values: dict[str, str]) -> str:
    """Shell variables replaced by `values`, else their `:-` default, else a placeholder."""

    def value(m: re.Match) -> str:
        name = m.group(1) or m.group(3)
        if name in values:
            return values[name]
        return expand(m.group(2), values) if m.group(2) is not None else f"placeholder-{name.lower()}"

    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)", value, text)


def sbatch_ferhpo_argv(env: dict[str, str] | None = None) -> list[str]:
    """The script's `ferhpo` command after the variables set at its top (or in `env`),
    split like the shell."""
    text = SBATCH.read_text().replace("\\\n", " ")
    values = {"FERHPO_STORAGE": FROM_ENV, **(env or {})}
    commands = []
    for line in text.splitlines():
        assignment = re.fullmatch(r'([A-Z_]+)="([^"]*)"(\s+#.*)?', line)
        if assignment:
            values[assignment[1]] = expand(assignment[2], values)
        elif line.startswith("ferhpo "):
            commands.append(line)
    assert len(commands) == 1, commands
    lexer = shlex.shlex(expand(commands[0], values), posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    tokens = list(lexer)
    if tokens[-1] == "&":
        tokens.pop()
    assert tokens[0] == "ferhpo" and not set(tokens) & {";", "&", "&&", "|", "||"}, tokens
    return tokens[1:]


@needs_bash
def test_sbatch_script_is_valid_bash():
    result = subprocess.run(["bash", "-n", str(SBATCH)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_sbatch_directives_make_a_requeueable_gpu_array_warned_before_the_time_limit():
    options = dict(d.split("=", 1) if "=" in d else (d, "") for d in sbatch_directives())
    assert re.fullmatch(r"\d+-\d+(%\d+)?", options["--array"])
    assert "--requeue" in options
    assert re.fullmatch(r"B:TERM@\d+", options["--signal"]) and int(options["--signal"].split("@")[1]) >= 60
    assert "gpu:1" in options.get("--gres", "") or options.get("--gpus-per-task") == "1"


def test_sbatch_script_forwards_term_and_reads_the_storage_from_the_environment():
    text = SBATCH.read_text()
    assert re.search(r"^trap .*kill -TERM .*\bTERM$", text, re.M)
    assert re.search(r"^ferhpo search .*&$", text.replace("\\\n", " "), re.M), "ferhpo must run in the background"
    assert re.search(r"^wait ", text, re.M)
    assert "FERHPO_STORAGE" in text and "scontrol requeue" in text


def test_sbatch_ferhpo_command_parses_with_the_real_parser():
    check_search_line(sbatch_ferhpo_argv(), storage_from_env=(None, FROM_ENV))


def test_expand_uses_assignments_then_defaults_then_placeholders():
    assert expand('"${A:-1}/$B/${C}/${D:-$B/d}"', {"B": "b"}) == '"1/b/placeholder-c/b/d"'


# The script run for real with stand-ins for ferhpo and scontrol on PATH: the stand-in
# ferhpo records its arguments, then exits or waits for TERM and exits 143 like ferhpo.
SCRIPT_SETTINGS = ("FERHPO_STORAGE", "SHARED_DIR", "DATA_DIR", "CACHE_DIR", "VENV", "STUDY", "TRIALS")
FAKE_FERHPO = """#!/bin/bash
printf '%s\\n' "$@" > "$LOG/argv"
if [[ "$FAKE_MODE" == exit ]]; then exit "$FAKE_EXIT"; fi
trap 'echo term >> "$LOG/term"; kill "$sleeper"; exit 143' TERM
sleep 30 & sleeper=$!
touch "$LOG/started"
wait "$sleeper"
"""
FAKE_SCONTROL = """#!/bin/bash
echo "$*" >> "$LOG/scontrol"
if [[ "$1" == show ]]; then echo "   JobId=$3 JobName=ferhpo-search"; echo "   JobState=$FAKE_STATE Reason=None"; fi
"""


def start_sbatch(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, Path]:
    bin_dir, log = tmp_path / "bin", tmp_path / "log"
    for folder in (bin_dir, log, tmp_path / "shared"):
        folder.mkdir(exist_ok=True)
    for name, body in (("ferhpo", FAKE_FERHPO), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(body)
        (bin_dir / name).chmod(stat.S_IRWXU)
    full_env = {
        **{k: v for k, v in os.environ.items() if k not in SCRIPT_SETTINGS},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "LOG": str(log),
        "SHARED_DIR": str(tmp_path / "shared"),
        "SLURM_JOB_ID": "4242",
        "SLURM_ARRAY_TASK_ID": "3",
        "FERHPO_STORAGE": "postgresql://ferhpo:secret@db/ferhpo",
        "FAKE_MODE": "exit",
        "FAKE_EXIT": "0",
        "FAKE_STATE": "RUNNING",
        **env,
    }
    # a session of its own: `finish` ends the script and its stand-ins if it hangs
    proc = subprocess.Popen(
        ["bash", str(SBATCH)], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    return proc, log


@needs_bash
def test_sbatch_refuses_to_start_without_the_storage_url(tmp_path):
    proc, log = start_sbatch(tmp_path, FERHPO_STORAGE="")
    _, err = finish(proc, timeout=20)
    assert proc.returncode == 2 and "FERHPO_STORAGE is not set" in err
    assert not (log / "argv").exists()


@needs_bash
@pytest.mark.parametrize("code", [0, 1])
def test_sbatch_passes_ferhpo_exit_code_through_and_requeues_nothing(tmp_path, code):
    proc, log = start_sbatch(tmp_path, FAKE_EXIT=str(code))
    _, err = finish(proc, timeout=20)
    assert proc.returncode == code, err
    assert not (log / "scontrol").exists()
    argv = (log / "argv").read_text().splitlines()
    assert argv == sbatch_ferhpo_argv({"SHARED_DIR": str(tmp_path / "shared")}), "the static reading is the shell's"
    check_search_line(argv, storage_from_env=(None,))


@needs_bash
@pytest.mark.parametrize("state,requeued", [("RUNNING", True), ("CANCELLED", False)])
def test_sbatch_forwards_term_to_ferhpo_and_requeues_only_a_running_job(tmp_path, state, requeued):
    """TERM to the batch shell alone (`--signal=B:TERM`) reaches ferhpo; on its 143 a job
    stopped before its time limit is requeued, one cancelled by scancel is not."""
    proc, log = start_sbatch(tmp_path, FAKE_MODE="wait", FAKE_STATE=state)
    deadline = time.monotonic() + 10
    while not (log / "started").exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, err = finish(proc, timeout=20)
    assert proc.returncode == 143, err
    assert (log / "term").read_text() == "term\n"
    calls = (log / "scontrol").read_text().splitlines()
    assert calls[0] == "show job 4242"
    assert ("requeue 4242" in calls) is requeued


# --------------------------------------------------------------------------- Kubernetes


def manifest() -> tuple[dict, list[dict]]:
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    jobs = [d for d in docs if d.get("kind") == "Job"]
    assert len(jobs) == 1, [d.get("kind") for d in docs]
    return jobs[0], docs


def container(job: dict) -> dict:
    (only,) = job["spec"]["template"]["spec"]["containers"]
    return only


def test_manifest_is_a_batch_v1_job_of_parallel_gpu_workers():
    job, docs = manifest()
    assert job["apiVersion"] == "batch/v1"
    spec = job["spec"]
    assert spec["completions"] >= 1 and spec["parallelism"] >= 1
    assert int(container(job)["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert all(d["apiVersion"] and d["kind"] and d["metadata"]["name"] for d in docs)


def test_manifest_gives_ferhpo_time_to_stop_and_retries_preempted_pods():
    job, _ = manifest()
    pod = job["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 60
    assert pod["restartPolicy"] == "Never"
    rules = job["spec"]["podFailurePolicy"]["rules"]
    ignored_codes = {c for r in rules if r["action"] == "Ignore" and "onExitCodes" in r for c in r["onExitCodes"]["values"]}
    ignored_conditions = {c["type"] for r in rules if r["action"] == "Ignore" for c in r.get("onPodConditions", [])}
    assert 143 in ignored_codes and "DisruptionTarget" in ignored_conditions
    for rule in rules:
        if "onExitCodes" in rule:
            assert rule["onExitCodes"]["containerName"] == container(job)["name"]
            assert rule["onExitCodes"]["operator"] in ("In", "NotIn") and 0 not in rule["onExitCodes"]["values"]


def test_manifest_takes_the_storage_url_from_a_secret():
    job, _ = manifest()
    (entry,) = [e for e in container(job)["env"] if e["name"] == "FERHPO_STORAGE"]
    assert set(entry) == {"name", "valueFrom"}
    ref = entry["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]


def test_manifest_shares_one_volume_claim_for_studies_and_data():
    job, docs = manifest()
    pod = job["spec"]["template"]["spec"]
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    mounts = {m["mountPath"]: m["name"] for m in container(job)["volumeMounts"]}
    work = container(job)["workingDir"]
    assert mounts.get(work) in claims, "studies/ is created in the working directory: it must be on the shared claim"
    argv = container(job)["command"][1:] + container(job)["args"]
    data = build_parser().parse_args(argv).data
    assert any(data.startswith(path.rstrip("/") + "/") for path in mounts), data
    declared = {d["metadata"]["name"]: d for d in docs if d["kind"] == "PersistentVolumeClaim"}
    for name in claims.values():
        if name in declared:
            assert declared[name]["spec"]["accessModes"] == ["ReadWriteMany"], "pods on several nodes share it"


def test_manifest_ferhpo_command_parses_with_the_real_parser():
    job, _ = manifest()
    c = container(job)
    command = [str(t) for t in c["command"] + c.get("args", [])]
    assert Path(command[0]).name == "ferhpo", "ferhpo must be the container's first process to receive SIGTERM"
    check_search_line(command[1:], storage_from_env=(None, "$(FERHPO_STORAGE)"))


def test_the_parser_check_rejects_an_unknown_option():
    """The check above is real: the parser refuses what ferhpo would refuse."""
    with pytest.raises(UsageError, match="unrecognized arguments: --checkpoint-evry 5"):
        build_parser().parse_args(["search", "--space", "resnet", "--checkpoint-evry", "5"])
