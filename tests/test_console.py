import pandas as pd

from sonosynth.console import console, print_table


def test_row_names_are_never_truncated_in_a_wide_table(capsys, monkeypatch):
    monkeypatch.setattr(console, "_width", 100)  # narrower than the table wants
    names = ["real", "real+synthetic [SinDDM]", "real+synthetic+regular [SinDDM]"]
    frame = pd.DataFrame({"condition": names,
                          **{f"pneumonia metric {k}": ["0.602 ± 0.313"] * 3 for k in range(11)}})
    print_table(frame, title="headline")
    printed = capsys.readouterr().out
    for name in names:
        assert name in printed
