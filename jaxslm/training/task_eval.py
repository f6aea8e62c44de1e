"""The likelihood benchmarks of `eval.tasks`, scored with the live training parameters (a hook
of the train loop, jaxslm.training.hooks)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from flax import nnx

from jaxslm.errors import JaxslmError
from jaxslm.evals.runner import TaskRequest, find_task_data, run_task
from jaxslm.evals.scorer import Scorer
from jaxslm.evals.tasks import SequenceBuilder
from jaxslm.models.decoder import abstract_decoder


class TaskEvaluator:
    """Runs `eval.tasks` on the current parameters at the run's last step and every
    `eval.tasks_every_steps` (0: only the last); results are flat metrics `<task>_accuracy`
    (and `<task>_macro_accuracy` where a task has parts). Scores are computed in float32, as
    slamkit and `python -m jaxslm.evaluate` compute them, whatever the training compute
    dtype."""

    def __init__(self, cfg, plan, mesh):
        directory = Path(cfg.eval.tasks_dir) if cfg.eval.tasks_dir else plan.corpus.path("eval_dir")
        if directory is None or not directory.is_dir():
            raise JaxslmError(
                f"eval.tasks={list(cfg.eval.tasks)} but there is no task folder "
                f"({directory or 'the corpus has no eval/'}); set eval.tasks_dir to a folder "
                "holding <task>.jsonl files"
            )
        self.requests = [TaskRequest(name, _task_data(directory, name)) for name in cfg.eval.tasks]
        self.builder = SequenceBuilder(plan.vocab, plan.tokenizer)
        padded = plan.model.padded_vocab_size
        self.every, self.total_steps = cfg.eval.tasks_every_steps, cfg.total_steps
        self.summaries: dict[str, dict] = {}
        self.step = 0
        self.interrupted: Callable[[], bool] = lambda: False  # checked between tasks
        scoring = plan.model.replace(dtype="float32", remat="none")
        graphdef = nnx.graphdef(abstract_decoder(scoring))
        self.scorer = Scorer(
            graphdef, None, plan.vocab, padded, mesh, cfg.eval.tasks_batch_tokens or None
        )

    def due(self, step: int) -> bool:
        return step == self.total_steps or (self.every > 0 and step % self.every == 0)

    def run(self, step: int, state: dict, results: dict[str, float]) -> None:
        results.update(self.metrics(state["params"], step))

    def metrics(self, params, step: int) -> dict[str, float]:
        """Accuracy per task (and macro accuracy over parts) with `params` at `step`; none
        when `interrupted()` turns true before the last task (the step's benchmarks are
        then left out whole, and `summaries` keep the last complete ones)."""
        self.scorer.params = params
        metrics, summaries = {}, {}
        for request in self.requests:
            if self.interrupted():
                return {}
            summary = run_task(self.scorer, self.builder, request, progress=False).summary
            summaries[request.name] = summary
            metrics[f"{request.name}_accuracy"] = summary["accuracy"]
            if "macro_accuracy" in summary:
                metrics[f"{request.name}_macro_accuracy"] = summary["macro_accuracy"]
        self.step, self.summaries = step, summaries
        return metrics


def _task_data(directory: Path, name: str) -> Path:
    path = find_task_data(directory, name)
    if path is None:
        raise JaxslmError(
            f"eval.tasks names {name!r} but {directory} holds neither {name}.jsonl nor {name}/"
        )
    return path
