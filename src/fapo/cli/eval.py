"""`fapo eval grm|policy|curves`: GenRM benchmarks, policy evaluation, training curves.

Parses arguments, calls `fapo.eval`, writes the reports. Holds no metric logic. `eval grm` imports
torch only with --model-dir; `eval curves` never does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a GenRM (ProcessBench, FlawedPositiveBench), a policy, or training curves")
    verbs = p.add_subparsers(dest="eval_verb", metavar="WHAT", required=True)
    _register_grm(verbs)
    _register_policy(verbs)
    _register_curves(verbs)


def _judge_client_options(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument(f"--{prefix}max-tokens", dest="judge_max_tokens", type=int, metavar="N",
                   help="critique budget in tokens; a critique cut there is no verdict (default 2048; recipe 8192)")
    p.add_argument(f"--{prefix}concurrency", dest="judge_concurrency", type=int, default=64, metavar="N",
                   help="GenRM requests in flight (default 64)")
    p.add_argument(f"--{prefix}timeout", dest="judge_timeout", type=float, metavar="S",
                   help="seconds per GenRM request (default 60; 3600 for a local model)")
    p.add_argument(f"--{prefix}temperature", dest="judge_temperature", type=float, metavar="T",
                   help="GenRM sampling temperature (default 0, greedy; recipe 0.6)")
    p.add_argument(f"--{prefix}top-p", dest="judge_top_p", type=float, metavar="P",
                   help="GenRM nucleus sampling mass (default 1.0; recipe 0.95)")
    p.add_argument(f"--{prefix}votes", dest="judge_votes", type=int, default=1, metavar="N", help="GenRM samples, majority verdict")
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
    q.add_argument("--limit", type=_positive_int, help="use only the first N rows of each file")
    q.add_argument("--sample", type=_positive_int, metavar="N",
                   help="a stratified random sample of N rows of each file (strata: wrong answer, flawed positive, "
                   "error-free, as ProcessBench's; each in proportion, at least one each when N allows)")
    q.add_argument("--seed", type=int, default=0, help="seed of --sample (default 0)")
    _preset_option(q)
    q.add_argument("--min-coverage", type=_fraction, default=0.5, metavar="F",
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
    q.add_argument("--limit", type=_positive_int, help="use only the first N problems")
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
                   help="sampling settings: default (fapo's, CPU-friendly) or recipe (what the FAPO recipe validates "
                   "with: policy avg@32 at T 1.0, top_p 0.7, 8192 tokens; GenRM T 0.6, top_p 0.95, 8192 tokens); "
                   "a flag given explicitly wins")


def _judge_sampling(args: argparse.Namespace) -> dict[str, Any]:
    """The judge's temperature, top_p and max_tokens: the preset's, under the flags given."""
    from fapo.eval.presets import JUDGE_PRESETS, preset_values

    return preset_values(JUDGE_PRESETS, args.preset, {"temperature": args.judge_temperature,
                                                     "top_p": args.judge_top_p, "max_tokens": args.judge_max_tokens})


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}")
    return value


def _judge_spec(args: argparse.Namespace, kind: str | None, model_dir: str | None, model_name: str) -> Any:
    """The JudgeSpec the arguments describe (None for no judge); CliError on a bad value."""
    from fapo.cli import CliError
    from fapo.eval.judges import JudgeSpec

    if kind is None:
        return None
    if model_dir is not None and not Path(model_dir).is_dir():
        raise CliError(f"model directory not found: {model_dir}")
    client = {"concurrency": args.judge_concurrency, "votes": args.judge_votes, **_judge_sampling(args)}
    timeout = args.judge_timeout or (3600.0 if kind == "model_dir" else None)
    if timeout is not None:
        client["timeout"] = timeout
    try:
        return JudgeSpec(kind, endpoints=tuple(args.endpoint or ()), model=model_name, api_key=args.api_key,
                         model_dir=model_dir, oracle=args.oracle, device=args.device, client=client)
    except ValueError as err:
        raise CliError(str(err)) from err


def _check_outputs(report_dir: str | None, paths: list[str | None], inputs: list[str | None]) -> None:
    """Make the report directory; CliError now, before any work, for an output file that cannot be
    written (a directory, a missing directory, one of the inputs) or two outputs on stdout."""
    from fapo.cli import CliError
    from fapo.io import DataError, check_output_path

    if sum(path == "-" for path in paths) > 1:
        raise CliError("only one output can go to stdout ('-')")
    try:
        for path in paths:
            check_output_path(path, [i for i in inputs if i])
    except DataError as err:
        raise CliError(str(err)) from err
    if report_dir:
        try:
            Path(report_dir).mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise CliError(f"cannot make report directory {report_dir}: {err}") from err


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
    from fapo.eval.grm_bench import evaluate_grm, grm_markdown, judge_critic_rows, write_grm_report
    from fapo.io import DataError

    _check_outputs(args.report_dir, [args.output, args.save_predictions], [*args.data, args.predictions])
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
                | ({} if spec is None else {"preset": args.preset, **_judge_sampling(args)}))
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
    """{subset, id, verdict, status}, and the judge's truncated flag and critique when a judge ran."""
    from fapo.cli import CliError
    from fapo.io import write_jsonl

    said = judgements or [None] * len(rows)
    try:
        write_jsonl(path, ({"subset": r.subset, "id": r.id, "verdict": v, "status": s}
                           | ({} if j is None else {"truncated": j.truncated, "critique": j.critique})
                           for r, v, s, j in zip(rows, verdicts, statuses, said, strict=True)))
    except OSError as err:
        raise CliError(f"cannot write {'stdout' if path == '-' else path}: {err.strerror or err}") from err


# ------------------------------------------------------------------------------------------- policy


def run_policy(args: argparse.Namespace) -> int:
    from fapo.cli import CliError
    from fapo.eval.generation import SamplingConfig
    from fapo.eval.policy import PolicyEvalConfig, evaluate_policy
    from fapo.eval.policy_report import policy_markdown, write_policy_report
    from fapo.eval.presets import POLICY_PRESETS, preset_values
    from fapo.eval.problems import DEFAULT_PROMPT_TEMPLATE, load_problems
    from fapo.io import DataError

    _check_outputs(args.report_dir, [args.output], [args.data])
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
