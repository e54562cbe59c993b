"""`lowprec train`: config errors exit 2, a finished run 0, a diverged run 3."""
import lowprec.train.loop
from lowprec.cli import main


def test_bad_config_exits_2(capsys):
    assert main(["train", "model=tiny", "optim.lrr=1"]) == 2
    assert "unknown key optim.lrr" in capsys.readouterr().err


def test_exit_codes_follow_status(monkeypatch, tmp_path):
    seen = []

    def fake_train(cfg):
        seen.append(cfg)
        return {"status": cfg.train.run_dir.rsplit("/", 1)[-1], "steps_done": 1, "steps": 2,
                "final_val_loss": None, "final_val_bpb": None}

    monkeypatch.setattr(lowprec.train.loop, "train", fake_train)
    f = tmp_path / "c.yaml"
    f.write_text("model: tiny\n")
    assert main(["train", str(f), "train.run_dir=x/ok"]) == 0
    assert main(["train", str(f), "train.run_dir=x/stopped"]) == 0
    assert main(["train", str(f), "train.run_dir=x/diverged"]) == 3
    assert main(["train", str(f), "train.run_dir=x/nan"]) == 3
    assert seen[0].model.d_model == 128
