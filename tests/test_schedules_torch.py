"""schedules.py against torch.optim.lr_scheduler: the same Python floats, every schedule and
the plateau on scripted metrics.  The schedules' own behaviour is tested in test_schedules.py."""

from __future__ import annotations

import warnings

import pytest
from test_schedules import BASE, CASES, EPOCHS, IDS, PLATEAU_CASES, our_rates

from fcspec import ir, schedules

torch = pytest.importorskip("torch")


def torch_rates(cls_name, kwargs, epochs=EPOCHS, metrics=None, base=BASE):
    """The rate torch uses in each epoch, stepping the scheduler after the epoch."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=base)
    sched = getattr(torch.optim.lr_scheduler, cls_name)(opt, **kwargs) if cls_name else None
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for e in range(epochs):
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            if sched is not None:
                sched.step(metrics[e]) if metrics is not None else sched.step()
    return out


@pytest.mark.parametrize(("kind", "options", "cls", "kwargs", "closed"), CASES, ids=IDS)
def test_rates_equal_torchs_exactly(kind, options, cls, kwargs, closed):
    want = torch_rates(cls, kwargs)
    assert our_rates(kind, options) == want  # the same Python floats, not just close ones
    assert schedules.lr_table(ir.Schedule(kind, dict(options)), BASE, EPOCHS) == want


@pytest.mark.parametrize(
    ("options", "metrics"), PLATEAU_CASES, ids=[str(o) for o, _ in PLATEAU_CASES]
)
def test_plateau_equals_torch_on_a_scripted_metric(options, metrics):
    monitor = "val_accuracy" if options.get("mode") == "max" else "val_loss"
    want = torch_rates("ReduceLROnPlateau", options, metrics=metrics)
    assert len(set(want)) > 1  # the script does make the rate drop
    got = our_rates("plateau", {"monitor": monitor, **options}, metrics=metrics, monitor=monitor)
    assert got == want
