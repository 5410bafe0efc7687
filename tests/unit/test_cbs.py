"""pilip's CBS arithmetic against closed-form numbers and Psi4 1.3.2's printed results."""

import math

import pytest

from pilip.errors import PilipError
from pilip.reference import cbs

E_INF = -76.0612345  # made-up CBS limit, Hartree
B = 0.31


@pytest.mark.parametrize(
    ("scheme", "alpha", "form"),
    [
        ("scf_xtpl_helgaker_2", 1.63, lambda x, a: math.exp(-a * x)),
        ("scf_xtpl_truhlar_2", 3.4, lambda x, a: x**-a),
        ("scf_xtpl_karton_2", 6.3, lambda x, a: math.exp(-a * math.sqrt(x))),
        ("corl_xtpl_helgaker_2", 3.0, lambda x, a: x**-a),
    ],
)
@pytest.mark.parametrize("zetas", [(2, 3), (3, 4)])
def test_two_point_forms_recover_the_limit_of_their_own_model(scheme, alpha, form, zetas):
    values = [E_INF + B * form(x, alpha) for x in zetas]
    got = cbs.SCHEMES[scheme].function(zetas, values)  # default alpha
    assert got == pytest.approx(E_INF, abs=1e-12)
    # an explicit exponent is used: data of another exponent extrapolates to the same limit
    values = [E_INF + B * form(x, alpha + 0.5) for x in zetas]
    assert cbs.SCHEMES[scheme].function(zetas, values, alpha + 0.5) == pytest.approx(
        E_INF, abs=1e-12
    )
    residual = abs(values[-1] - E_INF)  # the basis-set error left in the larger basis
    assert abs(cbs.SCHEMES[scheme].function(zetas, values) - E_INF) > 0.01 * residual


def test_helgaker_3_fits_the_exponent():
    zetas = (2, 3, 4)
    values = [E_INF + B * math.exp(-1.37 * x) for x in zetas]
    assert cbs.scf_xtpl_helgaker_3(zetas, values) == pytest.approx(E_INF, abs=1e-12)
    with pytest.raises(ValueError, match="monotonic"):
        cbs.scf_xtpl_helgaker_3(zetas, [-1.0, -1.2, -1.1])


def test_corl_helgaker_by_hand():
    # (3^3 E_T - 2^3 E_D) / (3^3 - 2^3)
    assert cbs.corl_xtpl_helgaker_2((2, 3), [-0.2, -0.27]) == pytest.approx(
        (27 * -0.27 - 8 * -0.2) / 19, abs=1e-15
    )


def test_karton_is_the_published_form_not_psi4_1_3_2s():
    zetas, alpha = (3, 4), 6.3
    values = [E_INF + B * math.exp(-alpha * math.sqrt(x)) for x in zetas]
    # Psi4 1.3.2's scf_xtpl_karton_2 divides by exp(-a)(exp(sqrt zHI) - exp(sqrt zLO))
    beta = (values[1] - values[0]) / (
        math.exp(-alpha) * (math.exp(math.sqrt(4)) - math.exp(math.sqrt(3)))
    )
    psi4_value = values[1] - beta * math.exp(-alpha * math.sqrt(4))
    # Psi4's number keeps about as much basis-set error as the larger basis alone
    assert abs(psi4_value - E_INF) > 0.5 * abs(values[1] - E_INF)
    assert cbs.scf_xtpl_karton_2(zetas, values) == pytest.approx(E_INF, abs=1e-12)


# Psi4 1.3.2, water (O 0 0 0.117; H 0 +-0.757 -0.467 A, c1): energy('mp2/cc-pv[dt]z')
PSI4_WATER = {
    ("hf", "cc-pvdz"): -76.02682326796962,
    ("mp2", "cc-pvdz"): -76.23065876097533,
    ("hf", "cc-pvtz"): -76.05724229056756,
    ("mp2", "cc-pvtz"): -76.33216942837389,
}
PSI4_WATER_CBS = -76.36210275250048  # its CBS TOTAL ENERGY
PSI4_WATER_CBS_CORRELATION = -0.30486046193291827  # its CBS CORRELATION ENERGY


def test_mp2_dt_equals_psi4_printed_total_with_largest_basis_scf():
    recipe = cbs.parse_method_string("mp2/cc-pv[dt]z")
    assert recipe.total(PSI4_WATER) == pytest.approx(PSI4_WATER_CBS, abs=1e-12)
    corl = recipe.total(PSI4_WATER) - PSI4_WATER[("hf", "cc-pvtz")]
    assert corl == pytest.approx(PSI4_WATER_CBS_CORRELATION, abs=1e-12)
    # from stored components (SCF and correlation per basis) the same number comes back
    components = cbs.components_from_totals(PSI4_WATER)
    assert set(components) == {"scf/cc-pvdz", "scf/cc-pvtz", "mp2_corl/cc-pvdz", "mp2_corl/cc-pvtz"}
    assert recipe.total_from_components(components) == pytest.approx(PSI4_WATER_CBS, abs=1e-12)


def test_extrapolated_scf_is_offered_explicitly():
    recipe = cbs.parse_cbs_recipe(
        {"scf": {"basis": "cc-pv[dt]z"}, "corl": {"method": "mp2", "basis": "cc-pv[dt]z"}}
    )
    assert recipe.stages[0].scheme == "scf_xtpl_helgaker_2"
    scf_cbs = cbs.scf_xtpl_helgaker_2(
        (2, 3), [PSI4_WATER[("hf", "cc-pvdz")], PSI4_WATER[("hf", "cc-pvtz")]]
    )
    assert recipe.total(PSI4_WATER) == pytest.approx(
        scf_cbs + PSI4_WATER_CBS_CORRELATION, abs=1e-12
    )
    assert scf_cbs < PSI4_WATER[("hf", "cc-pvtz")]


def test_method_strings_follow_psi4_defaults():
    recipe = cbs.parse_method_string("MP2/cc-pV[DT]Z")
    scf, corl = recipe.stages
    assert (scf.method, scf.bases, scf.scheme) == ("hf", ("cc-pvtz",), "xtpl_highest_1")
    assert (corl.method, corl.lesser, corl.bases, corl.zetas, corl.scheme) == (
        "mp2",
        "hf",
        ("cc-pvdz", "cc-pvtz"),
        (2, 3),
        "corl_xtpl_helgaker_2",
    )
    assert cbs.parse_method_string("scf/cc-pv[dtq]z").stages[0].scheme == "scf_xtpl_helgaker_3"
    assert cbs.parse_method_string("scf/cc-pv[tq]z").stages[0].scheme == "scf_xtpl_helgaker_2"
    single = cbs.parse_method_string("scf/sto-3g")
    assert len(single.stages) == 1 and single.stages[0].bases == ("sto-3g",)
    delta = cbs.parse_method_string("mp2/cc-pv[tq]z+D:ccsd(t)/cc-pvdz").stages[2]
    assert (delta.name, delta.method, delta.lesser, delta.bases) == (
        "delta1",
        "ccsd(t)",
        "mp2",
        ("cc-pvdz",),
    )


def test_composite_ani1ccx_shape():
    recipe = cbs.parse_cbs_recipe(
        {
            "corl": {"method": "mp2", "basis": "cc-pv[tq]z"},
            "delta": [{"method": "ccsd(t)", "basis": "cc-pvdz"}],
        }
    )
    totals = {
        ("hf", "cc-pvtz"): -76.05,
        ("mp2", "cc-pvtz"): -76.33,
        ("hf", "cc-pvqz"): -76.06,
        ("mp2", "cc-pvqz"): -76.35,
        ("hf", "cc-pvdz"): -76.02,
        ("mp2", "cc-pvdz"): -76.23,
        ("ccsd(t)", "cc-pvdz"): -76.24,
    }
    corl = (64 * (-76.35 + 76.06) - 27 * (-76.33 + 76.05)) / 37
    assert recipe.total(totals) == pytest.approx(-76.06 + corl + (-76.24 + 76.23), abs=1e-12)
    # one CCSD(T)/cc-pVDZ run yields the MP2/cc-pVDZ it is corrected against, as in Psi4
    jobs = cbs.plan_jobs(recipe, gradients=False)
    assert {(j.method, j.basis, j.gradient) for j in jobs} == {
        ("mp2", "cc-pvqz", False),
        ("mp2", "cc-pvtz", False),
        ("ccsd(t)", "cc-pvdz", False),
    }


def test_jobs_in_psi4_order():
    jobs = cbs.plan_jobs(cbs.parse_method_string("mp2/cc-pv[dt]z"), gradients=False)
    assert jobs == [cbs.Job("mp2", "cc-pvdz", False), cbs.Job("mp2", "cc-pvtz", False)]


def test_gradient_weights_and_jobs():
    single = cbs.parse_method_string("mp2/cc-pvdz")
    assert single.gradient_weights() == {("mp2", "cc-pvdz"): pytest.approx(1.0)}
    assert cbs.plan_jobs(single, gradients=True) == [cbs.Job("mp2", "cc-pvdz", True)]
    weights = cbs.parse_method_string("mp2/cc-pv[dt]z").gradient_weights()
    assert weights == {
        ("hf", "cc-pvtz"): pytest.approx(1 - 27 / 19),
        ("mp2", "cc-pvdz"): pytest.approx(-8 / 19),
        ("mp2", "cc-pvtz"): pytest.approx(27 / 19),
        ("hf", "cc-pvdz"): pytest.approx(8 / 19),
    }
    with pytest.raises(PilipError, match="non-linear"):
        cbs.parse_method_string("scf/cc-pv[dtq]z").gradient_weights()


def test_totals_from_jobs_prefers_a_methods_own_run():
    jobs = [cbs.Job("mp2", "cc-pvdz", True), cbs.Job("hf", "cc-pvdz", True)]
    energies = [{"hf": -1.0000001, "mp2": -1.2}, {"hf": -1.0}]
    totals = cbs.totals_from_jobs(jobs, energies)
    assert totals == {("hf", "cc-pvdz"): -1.0, ("mp2", "cc-pvdz"): -1.2}


def test_basis_series():
    assert cbs.expand_basis("aug-cc-pV[TQ]Z") == (("aug-cc-pvtz", "aug-cc-pvqz"), (3, 4))
    assert cbs.expand_basis("cc-pv[23]z") == (("cc-pvdz", "cc-pvtz"), (2, 3))
    assert cbs.expand_basis("def2-[st]zvp") == (("def2-svp", "def2-tzvp"), (2, 3))
    assert cbs.expand_basis("6-31G*") == (("6-31g*",), (0,))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("mp2/cc-pv[dq]z", "skips a cardinal number"),
        ("mp2/cc-pv[dtq]z", "no extrapolation of a corl energy over 3"),
        ("mp3x/cc-pvdz", "unknown method 'mp3x'; did you mean mp3"),
        ("mp2", "must be method/basis"),
        ("mp2/cc-pv[dt]z+D:ccsd/cc-pvdz+D:ccsd(t)/cc-pvdz", "more than one"),
        ("mp2/cc-pv[xy]z", "not a cardinal number"),
    ],
)
def test_bad_method_strings(text, match):
    with pytest.raises(PilipError, match=match.replace("[", r"\[").replace("(", r"\(")) as err:
        cbs.parse_method_string(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("recipe", "match"),
    [
        ({"scf": {"basis": "cc-pv[dt]z", "scheme": "scf_xtpl_foo_2"}}, "unsupported extrapolation"),
        ({"scf": {"basis": "cc-pv[dt]z", "scheme": "scf_xtpl_helgaker_3"}}, "needs 3 basis"),
        (
            {"corl": {"method": "mp2", "basis": "cc-pv[dt]z", "scheme": "scf_xtpl_helgaker_2"}},
            "not the corl energy",
        ),
        ({"corl": {"method": "mp2", "basis": "cc-pvdz", "bogus": 1}}, "unknown key"),
        (
            {"delta": [{"method": "ccsd(t)", "basis": "cc-pvdz"}], "scf": {"basis": "sto-3g"}},
            "needs a `corl` stage",
        ),
        ({"corl": {"basis": "cc-pvdz"}}, "needs method and basis"),
    ],
)
def test_bad_composite_recipes(recipe, match):
    with pytest.raises(PilipError, match=match):
        cbs.parse_cbs_recipe(recipe, where="references.x.cbs")


def test_missing_component_is_named():
    recipe = cbs.parse_method_string("mp2/cc-pv[tq]z")
    with pytest.raises(PilipError, match="needs energy components .*mp2_corl/cc-pvqz"):
        recipe.total_from_components({"scf/cc-pvtz": -76.0, "mp2_corl/cc-pvtz": -0.3})


def test_non_nesting_methods_in_one_basis_are_refused():
    recipe = cbs.parse_cbs_recipe(
        {
            "corl": {"method": "mp3", "basis": "cc-pvdz"},
            "delta": [{"method": "ccsd", "basis": "cc-pvdz"}],
        }
    )
    with pytest.raises(PilipError, match="no one of them yields the others"):
        cbs.plan_jobs(recipe, gradients=False)
