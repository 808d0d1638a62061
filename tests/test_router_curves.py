"""``benchmarks/router_curves.py`` reads a fit's TensorBoard scalars and reports the epoch the bundle exports."""

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import router_curves  # noqa: E402


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path))
    refs = {"ref/val_regret_best_static": 0.30, "ref/val_regret_random": 0.50, "zeroshot_ref/dense": 0.50}
    refs |= {"zeroshot_ref/best_static": 0.40, "zeroshot_ref/dense/piqa": 0.61, "zeroshot_ref/best_static/piqa": 0.55}
    for tag, value in refs.items():
        writer.add_scalar(tag, value, 0)
    # epoch 1 has the lowest validation regret; the last epoch is worse again
    for epoch, (regret, acc, routed) in enumerate([(0.28, 0.20, 0.52), (0.21, 0.31, 0.57), (0.24, 0.27, 0.54)]):
        step = 100 * (epoch + 1)
        writer.add_scalar("val/regret", regret, step)
        writer.add_scalar("val/selection_acc", acc, step)
        writer.add_scalar("zeroshot/piqa", routed, step)
        writer.add_scalar("zeroshot/average", routed, step)
    writer.close()
    return tmp_path


def test_table_reports_the_lowest_regret_epoch_beside_the_references(run_dir: Path, tmp_path: Path) -> None:
    series = router_curves.load_scalars(run_dir)
    assert router_curves.best_epoch(series) == 1
    text = router_curves.table(series)
    assert "best epoch (1," in text
    assert "| regret (nats/token) | 0.2100 | 0.3000 | 0.5000 |" in text
    assert "| selection accuracy (%) | 31.00 |" in text
    assert "| **PuDDing (router)** | 57.00 | **57.00** |" in text
    assert "| dense | 61.00 | 50.00 |" in text
    assert "| best static | 55.00 | 40.00 |" in text
    assert "| oracle | — | — |" in text  # not logged: shown as missing, not as zero


def test_a_folder_without_event_files_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no TensorBoard event files"):
        router_curves.load_scalars(tmp_path)
