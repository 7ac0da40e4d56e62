"""`fapo eval grm|policy|rollouts|curves`: GenRM benchmarks, policy evaluation, audits of rollouts, curves.

Parses arguments, calls `fapo.eval`, writes the reports. Holds no metric logic. `eval grm` imports
torch only with --model-dir; `eval curves` never does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from fapo.cli import fraction, positive_int


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a GenRM (ProcessBench, FlawedPositiveBench), a policy, or training curves")
    verbs = p.add_subparsers(dest="eval_verb", metavar="WHAT", required=True)
    _register_grm(verbs)
    _register_policy(verbs)
    _register_rollouts(verbs)
    _register_curves(verbs)


def _judge_client_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    from fapo.cli.judge import json_object
    from fapo.grm.types import RECIPE_MAX_TOKENS

    p.add_argument(f"--{prefix}max-tokens", dest="judge_max_tokens", type=int, metavar="N",
                   help=f"critique length bound in tokens, fitted to what the server's context leaves; a critique "
                   f"cut there is no verdict (default {RECIPE_MAX_TOKENS}, the recipe's; --preset recipe 8192)")
    p.add_argument(f"--{prefix}concurrency", dest="judge_concurrency", type=int, metavar="N",
                   help="GenRM requests in flight (default 64)")
    p.add_argument(f"--{prefix}timeout", dest="judge_timeout", type=float, metavar="S",
                   help="seconds per GenRM request (default 60; 3600 for a local model)")
    p.add_argument(f"--{prefix}temperature", dest="judge_temperature", type=float, metavar="T",
                   help="GenRM sampling temperature (default: none sent, the server's, as in the recipe; 0: greedy; "
                   "--preset recipe 0.6)")
    p.add_argument(f"--{prefix}top-p", dest="judge_top_p", type=float, metavar="P",
                   help="GenRM nucleus sampling mass (default: none sent, the server's; --preset recipe 0.95)")
    p.add_argument(f"--{prefix}votes", dest="judge_votes", type=int, metavar="N",
                   help="GenRM samples, majority verdict (default 1)")
    p.add_argument(f"--{prefix}chat-template-kwargs", dest="judge_chat_template_kwargs", type=json_object,
                   metavar="JSON", help="GenRM chat template arguments, e.g. '{\"enable_thinking\": false}'")
    p.add_argument("--api-key", default=os.environ.get("FAPO_GRM_API_KEY"), help="bearer token (default $FAPO_GRM_API_KEY)")
    p.add_argument("--no-gold", action="store_true", help="do not show the gold answer to the GenRM")


def _register_grm(verbs: argparse._SubParsersAction) -> None:
    text = ("score a GenRM on ProcessBench-format data (acc_err, acc_corr, F1 per subset; FlawedPositiveBench "
            "precision/recall/F1)")
    q = verbs.add_parser("grm", help=text, description=text + ". A subset's name is its file's stem.")
    q.add_argument("--data", action="append", required=True, metavar="FILE",
                   help="ProcessBench-format JSONL (id, problem, steps, label, final_answer_correct); repeatable")
    source = q.add_mutually_exclusive_group(required=True)
    source.add_argument("--predictions", metavar="FILE", help="verdicts {id, verdict} (e.g. written by `fapo judge`)")
    source.add_argument("--endpoint", action="append", metavar="URL", help="GenRM server base URL, repeatable")
    source.add_argument("--model-dir", metavar="DIR", help="a local GenRM model, served in this process")
    source.add_argument("--judge", choices=["oracle"], help="the testbed's programmatic judge (see --oracle)")
    q.add_argument("--model", default="genrm", help="model name sent to --endpoint servers (default genrm)")
    q.add_argument("--oracle", default="testbed", help="oracle name for --judge oracle (default testbed)")
    q.add_argument("--device", help="device for --model-dir (default: CUDA when available)")
    q.add_argument("--limit", type=positive_int, help="use only the first N rows of each file")
    q.add_argument("--sample", type=positive_int, metavar="N",
                   help="a stratified random sample of N rows of each file (strata: wrong answer, flawed positive, "
                   "error-free, as ProcessBench's; each in proportion, at least one each when N allows)")
    q.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    _preset_option(q)
    q.add_argument("--min-coverage", type=fraction, default=0.5, metavar="F",
                   help="exit 1 when fewer than this fraction of rows have a valid verdict (default 0.5; "
                   "below 1 a warning is printed: rows without one count as wrong, or as 'clean' on "
                   "FlawedPositiveBench)")
    _judge_client_options(q)
    q.add_argument("-o", "--output", metavar="REPORT.json", help="write the JSON report here ('-': stdout)")
    q.add_argument("--report-dir", metavar="DIR", help="write REPORT.json, REPORT.md and confusion.png here")
    q.add_argument("--save-predictions", metavar="FILE",
                   help="write the verdicts as {subset, id, verdict, status, truncated, critique} ('-': stdout)")
    q.set_defaults(func=run_grm)


def _register_policy(verbs: argparse._SubParsersAction) -> None:
    text = "sample k answers per problem, verify them, judge the correct ones: avg@k, pass@k, maj@k, flawed-positive rate"
    q = verbs.add_parser("policy", help=text, description=text + ".")
    q.add_argument("--model", required=True, help="policy model directory (or hub name)")
    q.add_argument("--data", required=True, metavar="FILE", help="JSONL of problems (MATH-500, AIME24, GSM8K, ...)")
    q.add_argument("--problem-field", help="problem column (default: the row schema's, problem, question, ...)")
    q.add_argument("--answer-field", help="gold answer column (default: the row schema's, gold, ground_truth, "
                   "answer, ...; GSM8K's '#### N' ok)")
    q.add_argument("--prompt-template", help="user message with {problem} (default: the training default; testbed: '{problem}')")
    q.add_argument("--answer-format", choices=["last_boxed", "strict"], default="last_boxed",
                   help="last_boxed: the last \\boxed{} answers; strict: exactly one box, nothing after (as in training)")
    q.add_argument("--limit", type=positive_int, help="use only the first N problems")
    q.add_argument("--k", type=int, help="samples per problem (default 16; recipe 32)")
    q.add_argument("--temperature", type=float, help="sampling temperature (default 1.0; recipe 1.0)")
    q.add_argument("--top-p", type=float, help="nucleus sampling mass (default 1.0; recipe 0.7)")
    q.add_argument("--max-tokens", type=int, help="most tokens per sample (default 2048; recipe 8192)")
    _preset_option(q)
    q.add_argument("--batch-size", type=int, default=64, help="sequences per transformers generate call (default 64)")
    q.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    q.add_argument("--backend", choices=["auto", "vllm", "transformers"], default="auto",
                   help="generation backend (default auto: vLLM when installed with a GPU)")
    q.add_argument("--device", help="device for transformers generation (default: CUDA when available)")
    q.add_argument("--judge", choices=["none", "oracle", "endpoint"],
                   help="who judges correct answers (default: endpoint with --endpoint, else none)")
    q.add_argument("--endpoint", action="append", metavar="URL", help="GenRM server base URL, repeatable")
    q.add_argument("--judge-model-dir", metavar="DIR", help="a local GenRM model, served in this process")
    q.add_argument("--grm-model", default="genrm", help="model name sent to the GenRM servers (default genrm)")
    q.add_argument("--oracle", default="testbed", help="oracle name for --judge oracle (default testbed)")
    _judge_client_options(q, prefix="judge-")
    q.add_argument("-o", "--output", metavar="REPORT.json", help="write the JSON report here ('-': stdout)")
    q.add_argument("--report-dir", metavar="DIR", help="write REPORT.json, REPORT.md, samples.jsonl and plots here")
    q.set_defaults(func=run_policy)


def _register_rollouts(verbs: argparse._SubParsersAction) -> None:
    text = ("audit existing rollouts: verify, judge the verified-correct ones, report accuracy and the "
            "flawed-positive ratio per training step and data source")
    q = verbs.add_parser("rollouts", help=text, description=text + ". Reads verl's rollout/validation dumps, TRL's "
                         "completion logs, fapo's critiques.jsonl, any JSONL/JSON/parquet (README, 'Row schema'); "
                         "rows are written as they are done and --resume continues them.")
    q.add_argument("files", nargs="+", metavar="FILE", help="rollout files or directories (verl dump dir, TRL output dir)")
    source = q.add_mutually_exclusive_group(required=True)
    source.add_argument("--endpoint", action="append", metavar="URL", help="GenRM server base URL, repeatable")
    source.add_argument("--judge", choices=["oracle", "none"], help="the programmatic judge (see --oracle), or none "
                        "(accuracy only)")
    q.add_argument("--model", default="genrm", help="model name sent to --endpoint servers (default genrm)")
    q.add_argument("--oracle", default="testbed", help="oracle name for --judge oracle (default testbed)")
    q.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="read FIELD (problem, response, gold, step, data_source, id) from COLUMN (dotted path); "
                   "repeatable")
    q.add_argument("--group-by", metavar="COLUMN", help="group rows by this column (default: the training step)")
    q.add_argument("--gold-file", action="append", metavar="FILE",
                   help="data with problems and gold answers, joined by problem text (TRL logs carry no gold)")
    q.add_argument("--answer-format", choices=["last_boxed", "strict"], default="last_boxed",
                   help="the answer rule (default last_boxed; strict: exactly one box, as in training)")
    q.add_argument("--verify-timeout", type=float, default=5.0, metavar="S", help="math-verify seconds per row")
    q.add_argument("--window", type=positive_int, default=2048, metavar="N",
                   help="rollouts in flight at once (default 2048; keeps the GenRM batch full)")
    q.add_argument("--examples", type=int, default=5, metavar="N", help="flawed positives shown with critiques")
    _preset_option(q)
    _judge_client_options(q)
    q.add_argument("--rows", metavar="ROWS.jsonl", help="audited rows, written as they are done "
                   "(default REPORT_DIR/rows.jsonl)")
    q.add_argument("--resume", action="store_true", help="continue --rows: its rows are counted, never judged again")
    q.add_argument("-o", "--output", metavar="REPORT.json", help="write the JSON report here ('-': stdout)")
    q.add_argument("--report-dir", metavar="DIR", help="write REPORT.json, REPORT.md, audit.png (and rows.jsonl) here")
    q.set_defaults(func=run_rollouts, device=None)


def _register_curves(verbs: argparse._SubParsersAction) -> None:
    text = "plot accuracy, flawed ratio, reward, response length and step time of training runs"
    q = verbs.add_parser("curves", help=text, description=text + " (one line per run).")
    q.add_argument("runs", nargs="+", metavar="RUN", help="a training output directory or its metrics.jsonl")
    q.add_argument("--out", required=True, metavar="DIR", help="directory for the PNGs, curves.json and CURVES.md")
    q.add_argument("--label", action="append", help="a name per run, in order (default: the run directory's name)")
    q.add_argument("--metric", action="append", default=[], metavar="KEY", help="also plot this metrics.jsonl key")
    q.set_defaults(func=run_curves)


# ------------------------------------------------------------------------------------------- shared


def _preset_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["default", "recipe"], default="default",
                   help="sampling settings: default (policy: fapo's CPU-friendly k 16, 2048 tokens; GenRM: JudgeConfig's, "
                   "the recipe's 16384-token critique budget, the server's decoding) or recipe (what the FAPO recipe "
                   "validates with: policy avg@32 at T 1.0, top_p 0.7, 8192 tokens; GenRM T 0.6, top_p 0.95, 8192 "
                   "tokens); a flag given explicitly wins")


def _judge_sampling(args: argparse.Namespace) -> dict[str, Any]:
    """The judge's temperature, top_p and max_tokens: the preset's, under the flags given (none of either:
    JudgeConfig's defaults, the one judge budget of every verb)."""
    from fapo.eval.presets import JUDGE_PRESETS, preset_values

    given = {"temperature": args.judge_temperature, "top_p": args.judge_top_p, "max_tokens": args.judge_max_tokens}
    return preset_values(JUDGE_PRESETS, getattr(args, "preset", "default"), given)


def _judge_settings(args: argparse.Namespace, spec: Any) -> dict[str, Any]:
    """What a report says the judge ran with: the preset and, for a GenRM, its budget and decoding (None: the
    server's); empty without a judge."""
    if spec is None:
        return {}
    config = spec.config
    sampling = {} if config is None else {"max_tokens": config.max_tokens, "temperature": config.temperature,
                                          "top_p": config.top_p}
    return {"preset": args.preset, **sampling}


def _judge_spec(args: argparse.Namespace, kind: str | None, model_dir: str | None, model_name: str) -> Any:
    """The JudgeSpec the arguments describe (None for no judge), its client settings a JudgeConfig made here
    once (options left out keep JudgeConfig's defaults); CliError on a bad value."""
    from fapo.cli import CliError
    from fapo.eval.judges import JudgeSpec, served_config
    from fapo.grm.types import JudgeConfig

    if kind is None:
        return None
    if model_dir is not None and not Path(model_dir).is_dir():
        raise CliError(f"model directory not found: {model_dir}")
    if kind == "endpoint" and not args.endpoint:
        raise CliError("an endpoint judge needs at least one URL (--endpoint http://HOST:PORT/v1)")
    given = {"concurrency": args.judge_concurrency, "votes": args.judge_votes, "timeout": args.judge_timeout,
             "chat_template_kwargs": args.judge_chat_template_kwargs, **_judge_sampling(args)}
    client = {name: value for name, value in given.items() if value is not None}
    try:
        if kind == "oracle":
            return JudgeSpec(oracle=args.oracle)
        if kind == "model_dir":
            return JudgeSpec(served_config(**client), model_dir=model_dir, device=args.device)
        return JudgeSpec(JudgeConfig(endpoints=tuple(args.endpoint), model=model_name, api_key=args.api_key, **client))
    except ValueError as err:
        raise CliError(str(err)) from err


def _check_outputs(report_dir: str | None, paths: list[str | None], inputs: list[str | None],
                   report_files: tuple[str, ...] = ()) -> None:
    """Make the report directory; CliError now, before any work, for an output file that cannot be
    written (a directory, a missing directory, one of the inputs) or two outputs on stdout."""
    from fapo.cli import CliError
    from fapo.io import DataError, check_output_paths

    if sum(path == "-" for path in paths) > 1:
        raise CliError("only one output can go to stdout ('-')")
    if report_dir:
        try:
            Path(report_dir).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CliError(f"cannot make report directory {report_dir}: {err}") from err
    in_report = [("report file", str(Path(report_dir) / name)) for name in report_files] if report_dir else []
    try:  # also: no two outputs the same file under any spelling, the report directory's files included
        check_output_paths([("output", path) for path in paths] + in_report, [i for i in inputs if i])
    except DataError as err:
        raise CliError(str(err)) from err


def _emit(report_json: dict[str, Any], markdown: str, output: str | None, stdout_taken: bool = False) -> None:
    """The markdown on stdout (stderr when another output goes there); the JSON to `output` ('-': stdout)."""
    from fapo.cli import CliError
    from fapo.eval.report import write_json

    print(markdown, end="", file=sys.stderr if output == "-" or stdout_taken else sys.stdout)
    if output == "-":
        try:
            write_json("-", report_json)
        except OSError as err:
            raise CliError(f"cannot write stdout: {err.strerror or err}") from err
        return
    if output:
        try:
            write_json(output, report_json)
        except OSError as err:
            raise CliError(f"cannot write {output}: {err}") from err
        print(f"report: {output}", file=sys.stderr)


# ------------------------------------------------------------------------------------------- grm


def run_grm(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.eval.critic_data import load_critic_sets, read_predictions
    from fapo.eval.grm_bench import (
        GRM_REPORT_FILES,
        evaluate_grm,
        grm_markdown,
        judge_critic_rows,
        write_grm_report,
    )
    from fapo.io import DataError

    _check_outputs(args.report_dir, [args.output, args.save_predictions], [*args.data, args.predictions],
                   GRM_REPORT_FILES)
    kind = "endpoint" if args.endpoint else "model_dir" if args.model_dir else "oracle" if args.judge else None
    spec = _judge_spec(args, kind, args.model_dir, args.model)
    try:
        if args.sample and args.limit:
            raise CliError("--sample and --limit both choose rows; give one")
        rows = load_critic_sets(args.data, args.limit, sample=args.sample, seed=args.seed)
        judgements, metrics, statuses = None, None, None
        if spec is None:
            predictions = read_predictions(args.predictions, rows)
            verdicts, statuses = predictions.verdicts, predictions.statuses
            source = f"predictions {args.predictions}"
        else:
            verdicts, judgements, metrics = judge_critic_rows(rows, spec, with_gold=not args.no_gold, progress=True)
            statuses = [j.status for j in judgements]
            source = spec.name
    except (DataError, ValueError) as err:
        raise CliError(str(err)) from err
    except OSError as err:  # e.g. a --model-dir without weights or tokenizer
        raise CliError(f"cannot load the GenRM: {err}") from err
    settings = ({"rows": len(rows)} | ({"sample": args.sample, "seed": args.seed} if args.sample else {})
                | _judge_settings(args, spec))
    report = evaluate_grm(rows, verdicts, source, judgements, metrics, statuses, settings)
    if args.save_predictions:
        _save_predictions(args.save_predictions, rows, verdicts, statuses, judgements)
    if args.report_dir:
        paths = write_grm_report(report, args.report_dir)
        print("report files: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    _emit(report.to_json(), grm_markdown(report), args.output, stdout_taken=args.save_predictions == "-")
    return _grm_exit_status(report, judgements, kind, args.min_coverage)


def _grm_exit_status(report: Any, judgements: list[Any] | None, kind: str | None, min_coverage: float) -> int:
    """1, with the reason on stderr, when every judgement failed or coverage is below `min_coverage`."""
    if judgements and all(j.status == "error" for j in judgements):
        hint = "is the GenRM server up?" if kind == "endpoint" else f"first error: {judgements[0].error}"
        print(f"fapo eval grm: every judgement failed ({hint})", file=sys.stderr)
        return 1
    status = ", ".join(f"{k} {v}" for k, v in report.judge_status.items())
    if report.coverage < 100 * min_coverage:
        print(f"fapo eval grm: error: only {report.coverage:.1f}% of rows have a valid verdict ({status}), "
              f"below --min-coverage {min_coverage:g}; the scores are not meaningful", file=sys.stderr)
        return 1
    if report.coverage < 100:
        print(f"fapo eval grm: WARNING: {100 - report.coverage:.1f}% of rows have no valid verdict ({status}); "
              "they count as wrong on ProcessBench and as 'clean' on FlawedPositiveBench", file=sys.stderr)
    return 0


def _save_predictions(path: str, rows: list[Any], verdicts: list[int | None], statuses: list[str],
                      judgements: list[Any] | None) -> None:
    from fapo.cli import CliError
    from fapo.eval.grm_bench import write_predictions

    try:
        write_predictions(path, rows, verdicts, statuses, judgements)
    except OSError as err:
        raise CliError(f"cannot write {'stdout' if path == '-' else path}: {err.strerror or err}") from err


# ------------------------------------------------------------------------------------------- policy


def run_policy(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.eval.generation import SamplingConfig
    from fapo.eval.policy import PolicyEvalConfig, evaluate_policy
    from fapo.eval.policy_report import POLICY_REPORT_FILES, policy_markdown, write_policy_report
    from fapo.eval.presets import POLICY_PRESETS, preset_values
    from fapo.eval.problems import DEFAULT_PROMPT_TEMPLATE, load_problems
    from fapo.io import DataError

    _check_outputs(args.report_dir, [args.output], [args.data], POLICY_REPORT_FILES)
    if args.model.startswith(("/", ".", "~")) and not Path(args.model).expanduser().is_dir():
        raise CliError(f"model directory not found: {args.model}")
    kind = args.judge or ("endpoint" if args.endpoint else "model_dir" if args.judge_model_dir else "none")
    if args.endpoint and kind != "endpoint":
        raise CliError(f"--endpoint given with --judge {kind}; drop one")
    if args.judge_model_dir and kind != "model_dir":
        raise CliError(f"--judge-model-dir given with --judge {kind}; drop one")
    spec = _judge_spec(args, None if kind == "none" else kind, args.judge_model_dir, args.grm_model)
    try:
        chosen = preset_values(POLICY_PRESETS, args.preset, {"k": args.k, "temperature": args.temperature,
                                                             "top_p": args.top_p, "max_tokens": args.max_tokens})
        sampling = SamplingConfig(**chosen, batch_size=args.batch_size, seed=args.seed, backend=args.backend,
                                  device=args.device)
        config = PolicyEvalConfig(sampling, args.prompt_template or DEFAULT_PROMPT_TEMPLATE,
                                  answer_format=args.answer_format, judge_with_gold=not args.no_gold)
        problems = load_problems(args.data, args.problem_field, args.answer_field, args.limit)
        report = evaluate_policy(args.model, problems, config, spec, data_name=str(args.data), progress=True)
    except (DataError, ValueError) as err:
        raise CliError(str(err)) from err
    except OSError as err:  # e.g. a model directory without weights or tokenizer
        raise CliError(f"cannot load a model: {err}") from err
    if args.report_dir:
        paths = write_policy_report(report, args.report_dir)
        print("report files: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    _emit(report.to_json(), policy_markdown(report), args.output)
    return 0


# ------------------------------------------------------------------------------------------- rollouts


def run_rollouts(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.eval.audit import AuditConfig, audit_rollouts
    from fapo.eval.audit_report import AUDIT_REPORT_FILES, audit_markdown, write_audit_report
    from fapo.eval.rollout_rows import RowSettings, gold_index
    from fapo.io import DataError
    from fapo.schema import FieldMap

    rows_path = args.rows or (str(Path(args.report_dir) / "rows.jsonl") if args.report_dir else None)
    if rows_path is None:
        raise CliError("say where the audited rows go: --rows FILE or --report-dir DIR")
    _check_outputs(args.report_dir, [args.output, rows_path], [*args.files, *(args.gold_file or [])], AUDIT_REPORT_FILES)
    kind = "endpoint" if args.endpoint else None if args.judge == "none" else "oracle"
    spec = _judge_spec(args, kind, None, args.model)
    try:
        mapping = FieldMap.parse(args.map)
        rows = RowSettings(mapping, args.group_by, gold_index(args.gold_file, mapping) if args.gold_file else {})
        config = AuditConfig(rows_path, rows, resume=args.resume, with_gold=not args.no_gold,
                             answer_rule=args.answer_format, verify_timeout=args.verify_timeout, window=args.window,
                             examples=args.examples, progress=True)
        settings = _judge_settings(args, spec)
        report = audit_rollouts(list(args.files), config, spec, settings)
    except (DataError, ValueError) as err:
        raise CliError(str(err)) from err
    except OSError as err:
        raise CliError(f"cannot write {rows_path}: {err.strerror or err}") from err
    print(f"rows: {rows_path}", file=sys.stderr)
    if args.report_dir:
        paths = write_audit_report(report, args.report_dir)
        print("report files: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    _emit(report.to_json(), audit_markdown(report), args.output)
    total = report.total
    if spec is not None and total["correct"] and total["errors"] == total["correct"]:
        hint = "is the GenRM server up?" if kind == "endpoint" else f"can oracle {args.oracle!r} judge these problems?"
        print(f"fapo eval rollouts: every judgement failed ({hint})", file=sys.stderr)
        return 1
    return 0


# ------------------------------------------------------------------------------------------- curves


def run_curves(args: argparse.Namespace) -> int:
    import dataclasses

    from fapo.cli import CliError
    from fapo.eval.curves import CURVE_METRICS, CurveMetric, read_run, unique_labels, write_curves
    from fapo.io import DataError

    if args.label and len(args.label) != len(args.runs):
        raise CliError(f"{len(args.label)} --label for {len(args.runs)} runs; give one per run or none")
    metrics = list(CURVE_METRICS)
    known = {m.key for m in metrics}
    metrics += [CurveMetric(key, key.replace("/", "_"), key) for key in args.metric if key not in known]
    try:
        labels = args.label or [None] * len(args.runs)
        runs = [read_run(path, label, keys=[m.key for m in metrics]) for path, label in zip(args.runs, labels)]
        names = unique_labels([r.label for r in runs])
        runs = [dataclasses.replace(r, label=name) for r, name in zip(runs, names)]
        paths = write_curves(runs, args.out, metrics)
    except (DataError, ValueError) as err:
        raise CliError(str(err)) from err
    except OSError as err:
        raise CliError(f"cannot write to {args.out}: {err}") from err
    print(Path(paths["markdown"]).read_text(encoding="utf-8"), end="")
    print("files: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    return 0
