"""Your own model (`model.name: module:function`, docs/design.md §11): a function the test writes into the
working directory is imported, built, checked on a dummy batch of the data's shape and rebuilt as an
EarlyExitNetwork over the very same stages and heads; its K is what the study file's lists are
checked against at load time; and every way of getting the protocol wrong is one line on model.name."""

from __future__ import annotations

import sys
import textwrap
import uuid

import pytest
import torch

from ee_search.config import ModelConfig, load_study_file
from ee_search.errors import UserInputError
from ee_search.exits import exit_costs
from ee_search.exits.inference import CompactedEarlyExit
from ee_search.models import build_model
from ee_search.models.base import EarlyExitNetwork
from ee_search.models.user import UserModelError, check_user_model
from tests.conftest import write_study

# A 3-exit CNN in the protocol's shape. `config` is recorded so tests can see what the function got;
# CALLS counts builds (the load-time check is cached).
GOOD = """
import torch
from torch import nn

CALLS = []

def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

def head(c, k):
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, k))

class Net(nn.Module):
    def __init__(self, cin, k, w):
        super().__init__()
        self.stages = nn.ModuleList([block(cin, w), block(w, 2 * w), block(2 * w, 2 * w)])
        self.heads = nn.ModuleList([head(w, k), head(2 * w, k), head(2 * w, k)])

    def forward(self, x):
        out = []
        for stage, h in zip(self.stages, self.heads):
            x = stage(x)
            out.append(h(x))
        return out

def build(in_channels, num_classes, config):
    CALLS.append((in_channels, num_classes, config))
    return Net(in_channels, num_classes, config["options"].get("w", 4))
"""


@pytest.fixture
def user_module(workdir, monkeypatch):
    """Write a module into the working directory under a fresh name (so no test sees another's cached
    import or check); the cwd that loading appends to sys.path and the imports are undone afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    names: list[str] = []

    def write(source: str) -> str:
        name = f"user_net_{uuid.uuid4().hex[:10]}"
        (workdir / f"{name}.py").write_text(textwrap.dedent(source))
        names.append(name)
        return name

    yield write
    for name in names:
        sys.modules.pop(name, None)


def test_builds_the_users_stages_and_heads_as_an_early_exit_network(user_module):
    name = user_module(GOOD)
    cfg = ModelConfig(name=f"{name}:build", width=12, options={"w": 6})
    torch.manual_seed(0)
    model = build_model(cfg, 1, 7)
    assert isinstance(model, EarlyExitNetwork) and model.num_exits == 3
    assert model.exit_loss_weights == (0.3, 0.3, 1.0)  # the default rule, for the K the function built
    module = sys.modules[name]
    in_channels, num_classes, config = module.CALLS[-1]
    assert (in_channels, num_classes) == (1, 7)
    assert config["options"] == {"w": 6} and config["width"] == 12 and config["name"] == f"{name}:build"
    x = torch.rand(4, 1, 28, 28)
    model.eval()
    outs = model(x)
    assert [tuple(o.shape) for o in outs] == [(4, 7)] * 3
    # FLOPs per exit and compacted inference only see stages and heads: they work as for built-ins.
    costs = exit_costs(model, (1, 28, 28))
    assert costs.relative[0] < costs.relative[1] < costs.relative[2]
    compact = CompactedEarlyExit(model, [2.0, 2.0], "max_softmax").eval()  # nobody leaves early
    prediction, exit_, _ = compact(x)
    assert exit_.tolist() == [3] * 4 and prediction.tolist() == outs[-1].argmax(1).tolist()


def test_weights_given_in_the_file_are_used_and_counted(user_module):
    name = user_module(GOOD)
    model = build_model(ModelConfig(name=f"{name}:build", exit_loss_weights=[0.1, 0.2, 0.7]), 3, 10)
    assert model.exit_loss_weights == (0.1, 0.2, 0.7)
    with pytest.raises(UserModelError, match="3 exits but 2 exit loss weights"):
        build_model(ModelConfig(name=f"{name}:build", exit_loss_weights=[0.5, 1.0]), 3, 10)


def test_the_check_is_cached_and_leaves_the_global_rng_alone(user_module):
    name = user_module(GOOD)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    config = {"name": f"{name}:build", "options": {}}
    assert check_user_model(f"{name}:build", 3, 10, 28, config) == 3
    assert check_user_model(f"{name}:build", 3, 10, 28, config) == 3
    assert len(sys.modules[name].CALLS) == 1
    assert torch.equal(torch.get_rng_state(), before)
    assert check_user_model(f"{name}:build", 1, 10, 28, config) == 3  # another shape: checked again
    assert len(sys.modules[name].CALLS) == 2


_BROKEN = {
    "import_raises": ("import torch\nraise RuntimeError('bad install')\n", "raised RuntimeError: bad install"),
    "import_inside_fails": ("import not_a_real_package_xyz\n", "install what it imports"),
    "no_function": ("x = 1\n", "has no attribute 'build'"),
    "not_callable": ("build = 3\n", "is a int, not a function"),
    "function_raises": ("def build(c, k, config):\n    raise KeyError('depth')\n", "raised KeyError: 'depth'"),
    "not_a_module": ("def build(c, k, config):\n    return {'stages': []}\n", "returned a dict, not a torch.nn.Module"),
    "no_stages": (
        "from torch import nn\ndef build(c, k, config):\n    return nn.Linear(2, 2)\n",
        "whose `stages` is none, not an nn.ModuleList",
    ),
    "plain_list": (
        "from torch import nn\nclass N(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.stages = [nn.Identity()]\n        self.heads = nn.ModuleList([nn.Identity()])\n"
        "def build(c, k, config):\n    return N()\n",
        "whose `stages` is a list, not an nn.ModuleList",
    ),
    "unequal": (
        GOOD.replace("self.heads = nn.ModuleList([head(w, k), head(2 * w, k), head(2 * w, k)])",
                     "self.heads = nn.ModuleList([head(w, k), head(2 * w, k)])"),
        "3 stages but 2 heads",
    ),
    "one_exit": (
        GOOD.replace("[block(cin, w), block(w, 2 * w), block(2 * w, 2 * w)]", "[block(cin, w)]")
            .replace("[head(w, k), head(2 * w, k), head(2 * w, k)]", "[head(w, k)]"),
        "needs at least 2",
    ),
    "forward_raises": (GOOD.replace("x = stage(x)", "x = stage(x.view(x.shape[0], -1))"), "raised RuntimeError"),
    "forward_one_tensor": (GOOD.replace("return out", "return out[-1]"), "returned a Tensor: return a list of 3"),
    "forward_too_few": (GOOD.replace("return out", "return out[:2]"), "returned 2 items: return a list of 3"),
    "wrong_classes": (GOOD.replace("head(2 * w, k)]", "head(2 * w, 5)]"), "exit 3 logits of shape [2, 5]"),
    "forward_not_the_chain": (GOOD.replace("out.append(h(x))", "out.append(h(x) * 2)"), "exit 1 of forward differs"),
}


@pytest.mark.parametrize("case", sorted(_BROKEN))
def test_each_broken_model_is_one_line_on_model_name_at_load(user_module, workdir, case):
    source, words = _BROKEN[case]
    name = user_module(source)
    study = write_study(workdir, f"""\
        name: broken
        data: {{dataset: digits}}
        model: {{name: "{name}:build"}}
        """)
    with pytest.raises(UserInputError) as info:
        load_study_file(study)
    error = info.value
    assert error.source == str(study) and error.field == "model.name"
    assert words in error.message, error.message
    assert "\n" not in str(error)


def test_a_module_that_does_not_exist_names_the_working_directory(workdir, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    study = write_study(workdir, 'name: s\nmodel: {name: "no_such_nets_here.deep:build"}\n')
    with pytest.raises(UserInputError, match="no module named 'no_such_nets_here'") as info:
        load_study_file(study)
    assert info.value.field == "model.name" and str(workdir) in info.value.message


def test_the_check_runs_on_the_datas_shape(user_module, workdir):
    """A head that flattens a fixed 28x28 map works on digits cropped to 28, fails on 32 (no crop)."""
    name = user_module(GOOD.replace(
        "def head(c, k):\n    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, k))",
        "def head(c, k):\n    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, k))\n"
        "def fixed(c, k, side):\n    return nn.Sequential(nn.Flatten(), nn.Linear(c * side * side, k))",
    ).replace("head(w, k), head(2 * w, k), head(2 * w, k)", "fixed(w, k, 14), head(2 * w, k), head(2 * w, k)"))
    study = write_study(workdir, f'name: s\ndata: {{dataset: digits}}\nmodel: {{name: "{name}:build"}}\n')
    assert load_study_file(study).config.num_exits == 3  # default crop 28 -> 14x14 after stage 1
    with pytest.raises(UserInputError) as info:
        load_study_file(study, ["data.augment.crop=null"])
    assert info.value.field == "model.name" and "[2, 1, 32, 32]" in info.value.message


@pytest.mark.parametrize(
    ("overrides", "field", "words"),
    [
        (["exits.thresholds=[0.9]"], "exits.thresholds", "has 2 side exits, so give 2 thresholds"),
        (["model.exit_loss_weights=[1.0, 1.0]"], "model.exit_loss_weights", "has 3 exits, so give 3 weights"),
        (["train.early_stopping.monitor=val_accuracy_exit_4"], "train.early_stopping.monitor", "exits 1..3"),
        (["model.depth=3"], "model.depth", "applies to the built-in models only"),
        (["model.side_head=conv"], "model.side_head", "applies to the built-in models only"),
    ],
)
def test_the_files_lists_are_checked_against_the_built_k(user_module, workdir, overrides, field, words):
    name = user_module(GOOD)
    study = write_study(workdir, f'name: s\ndata: {{dataset: digits}}\nmodel: {{name: "{name}:build"}}\n')
    loaded = load_study_file(study)
    assert loaded.config.num_exits == 3 and loaded.config.loss_weights == [0.3, 0.3, 1.0]
    with pytest.raises(UserInputError) as info:
        load_study_file(study, overrides)
    assert info.value.field == field and words in info.value.message


def test_searching_the_width_checks_every_choice(user_module, workdir):
    name = user_module(GOOD.replace('config["options"].get("w", 4)', 'config["width"]')
                       .replace("    CALLS.append", "    assert config['width'] != 3, 'odd width'\n    CALLS.append"))
    study = write_study(workdir, f"""\
        name: s
        data: {{dataset: digits}}
        model: {{name: "{name}:build", width: 4}}
        search: {{space: {{model.width: {{type: categorical, choices: [4, 3]}}}}}}
        """)
    with pytest.raises(UserInputError) as info:
        load_study_file(study)
    assert info.value.field == "search.space['model.width']" and "odd width" in info.value.message


@pytest.mark.parametrize(
    ("model", "field", "words"),
    [
        ('{name: "ee_vgg", options: {w: 3}}', "model.options", "is for your own model's function"),
        ('{name: "resnet"}', "model.name", "'package.module:function'"),
        ('{name: "my nets:build"}', "model.name", "'package.module:function'"),
        ('{name: "nets:"}', "model.name", "'package.module:function'"),
    ],
)
def test_names_and_options_are_checked_without_importing(workdir, model, field, words):
    study = write_study(workdir, f"name: s\nmodel: {model}\n")
    with pytest.raises(UserInputError) as info:
        load_study_file(study)
    assert info.value.field == field and words in info.value.message
