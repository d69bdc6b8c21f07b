# atoll build, test and benchmark entry points.
GO ?= go
PYTHON ?= python3
BIN := bin/atoll
# Where pip puts the scripts of $(PYTHON)'s packages (uv among them).
PY_SCRIPTS := $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')

.PHONY: build proto test test-go test-python test-kube bench demo clean

build:
	$(GO) build -o $(BIN) ./cmd/atoll
	# The slim worker agent the server runs beside itself (after the server:
	# one older than the server binary is passed over as stale).
	$(GO) build -o $(dir $(BIN))atoll-agent ./cmd/atoll-agent

# Regenerate the Go and Python code for api/ (needs protoc-gen-go and
# protoc-gen-go-grpc on PATH and grpcio-tools installed), at the versions
# the committed code was made with, e.g. outside the repository:
#   python3 -m venv /work/tools/protovenv && /work/tools/protovenv/bin/pip install grpcio-tools==1.85.1
#   GOBIN=/work/tools/bin go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   GOBIN=/work/tools/bin go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2
#   PATH=/work/tools/bin:$PATH make proto PYTHON=/work/tools/protovenv/bin/python
proto:
	$(PYTHON) -m grpc_tools.protoc -I api \
		--go_out=. --go_opt=module=github.com/atoll-dev/atoll \
		--go-grpc_out=. --go-grpc_opt=module=github.com/atoll-dev/atoll \
		--python_out=python --pyi_out=python --grpc_python_out=python \
		api/atoll/v1/atoll.proto api/atoll/v1/storage.proto

test: build test-go test-python

test-go:
	PATH="$(PY_SCRIPTS):$$PATH" $(GO) test -count=1 ./...
	# Each fuzz target briefly, bounded by a count of inputs rather than a
	# duration: a duration that ends while the fuzzer minimizes a new input
	# fails the run with "context deadline exceeded" on a loaded machine.
	$(GO) test -run=NONE -fuzz=FuzzParseRequirement -fuzztime=50000x -fuzzminimizetime=200x ./internal/envbuild/
	$(GO) test -run=NONE -fuzz=FuzzServerReadsEvents -fuzztime=5000x -fuzzminimizetime=200x ./internal/workerproto/
	$(GO) test -run=NONE -fuzz=FuzzReadFrame -fuzztime=20000x -fuzzminimizetime=200x ./internal/fastcall/

test-python: build
	PATH="$(PY_SCRIPTS):$$PATH" ATOLL_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q python/tests --ignore=python/tests/kube

# The end-to-end suite with --launcher kubernetes, on the single-node test
# cluster of scripts/kube-up.sh, brought up and down around it (as root).
test-kube: build
	eval "$$(bash scripts/kube-up.sh | tail -n 1)" && \
	PATH="$(PY_SCRIPTS):$$PATH" ATOLL_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q python/tests/kube; \
	status=$$?; bash scripts/kube-down.sh; exit $$status

bench: build
	PATH="$(PY_SCRIPTS):$$PATH" ATOLL_BIN=$(abspath $(BIN)) $(PYTHON) bench/bench.py

demo: build
	ATOLL_BIN=$(abspath $(BIN)) $(PYTHON) examples/quickstart.py

clean:
	rm -rf bin
