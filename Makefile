# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv, install the CPU build of torch first (so pip never pulls a CUDA build here),
# then harken itself. GPU users: install your own torch build first, then `pip install -e .`.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
DEBIAN_AUDIO = sonic-pi-samples sound-theme-freedesktop flite

.PHONY: setup demo test audio-packages clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e '.[dev]'
	touch $@

# Real audio for the demo and tests comes from Debian packages; installed when we are root
# and apt-get exists, otherwise harken skips that part with a notice.
audio-packages:
	@if [ ! -d /usr/share/sonic-pi/samples ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEBIAN_AUDIO)) >/dev/null \
		|| echo "note: could not install $(DEBIAN_AUDIO); the real-audio part will be skipped"; \
	fi

demo: setup audio-packages
	$(VENV)/bin/harken demo --out runs/demo

test: setup audio-packages
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf $(VENV) runs
