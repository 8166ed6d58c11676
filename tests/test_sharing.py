import pytest

from pet_fairseq.sharing import LayerPlan, LayerStep


def test_parse_pet_plan():
    plan = LayerPlan.parse("0,1,0~,1~")
    assert plan.steps == (LayerStep(0), LayerStep(1), LayerStep(0, True), LayerStep(1, True))
    assert (plan.depth, plan.num_unique) == (4, 2)
    assert str(plan) == "0,1,0~,1~"


@pytest.mark.parametrize(
    "text, depth, unique",
    [("0,0,0,0", 4, 1), ("0,1,2,3", 4, 4), (" 0 , 1 ,2~", 3, 3), ("1,0,1~,0~", 4, 2)],
)
def test_parse_other_plans(text, depth, unique):
    plan = LayerPlan.parse(text)
    assert (plan.depth, plan.num_unique) == (depth, unique)


def test_constructors_match_parsed_plans():
    assert LayerPlan.stacked(2) == LayerPlan.parse("0,1,0~,1~")
    assert LayerPlan.stacked(3, swap_qk=False) == LayerPlan.parse("0,1,2,0,1,2")
    assert LayerPlan.unshared(3) == LayerPlan.parse("0,1,2")


@pytest.mark.parametrize(
    "text, message",
    [
        ("0,1,x", "unknown step 'x'"),
        ("0,~1", "unknown step '~1'"),
        ("0,-1", "unknown step '-1'"),
        ("0,2,0~,2~", r"never applies unique layer\(s\) \[1\]"),
        ("", "is empty"),
        ("0,,1", "empty step"),
    ],
)
def test_invalid_plans_name_the_problem(text, message):
    with pytest.raises(ValueError, match=message) as err:
        LayerPlan.parse(text, "--encoder-layer-plan")
    assert "--encoder-layer-plan" in str(err.value)
