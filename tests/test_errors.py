"""The user-error type and its hint."""

from esacl.errors import UserError, did_you_mean


def test_did_you_mean_names_the_closest_spelling_or_nothing():
    assert did_you_mean("esacl-err", ["esacl-er", "sparcl-er", "er"]) == " (did you mean 'esacl-er'?)"
    assert did_you_mean("zzz", ["esacl", "sgd"]) == ""
    assert did_you_mean("sgd", []) == ""


def test_a_user_error_is_an_exception_its_message_one_line():
    err = UserError("config key 'lr' must be in (0, inf), got -1")
    assert isinstance(err, Exception) and "\n" not in str(err)
