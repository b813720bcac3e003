# demon — the two commands that matter: `make run` and `make test` (see README.md).
SHELL := /bin/bash
GO ?= go
# go-nvml's cgo preamble calls NVML functions the header marks deprecated; without this the
# first build of every variant (-race, -asan) prints pages of -Wdeprecated-declarations.
# (Go's default CGO_CFLAGS is "-O2 -g"; an explicit value from the environment wins.)
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations
BUILD := build
GOFLAGS_ASAN := -asan -ldflags='-s=false -w=false'
# Packages whose tests also run under AddressSanitizer/LeakSanitizer (C++ instrumented).
ASAN_PKGS := ./trt/... ./session/... ./models/...

NATIVE_DEPS := g++ cmake libgtest-dev
RUN_DEPS := g++
CHECK_DEPS := clang-format

.PHONY: all build run test test-native test-go test-asan test-leakprobe test-gpu gpu-check test-browser check fmt deps-test deps-run clean bench bench-dit

all: build

build: deps-run
	$(GO) build -o $(BUILD)/bin/demond ./cmd/demond

## run: start demond on its embedded defaults (host device, CPU reference engines).
run: build
	./$(BUILD)/bin/demond $(ARGS)

## test: native tests (ASan+UBSan), Go tests with -race, the sanitizer pass, the leak probe,
## and the page in headless Chromium.
test: deps-test test-native test-go test-asan test-leakprobe test-browser

deps-test:
	@scripts/deps.sh $(NATIVE_DEPS)

deps-run:
	@scripts/deps.sh $(RUN_DEPS)

test-native:
	cmake -S . -B $(BUILD)/native -DDEMON_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	cmake --build $(BUILD)/native -j2
	ctest --test-dir $(BUILD)/native --output-on-failure

test-go:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

test-asan:
	ASAN_OPTIONS=detect_leaks=1 $(GO) test $(GOFLAGS_ASAN) -count=1 $(ASAN_PKGS)

# The net must catch a fish: a test-only build that leaks must fail under LeakSanitizer.
test-leakprobe:
	@mkdir -p $(BUILD)
	@if ASAN_OPTIONS=detect_leaks=1 $(GO) test $(GOFLAGS_ASAN) -count=1 -tags leakprobe -run TestDeliberateLeak ./trt/ >$(BUILD)/leakprobe.log 2>&1; then \
		echo "leak probe: the deliberate leak was NOT reported; the sanitizer pass is blind" >&2; exit 1; \
	elif grep -q "LeakSanitizer: detected memory leaks" $(BUILD)/leakprobe.log && grep -q dm_debug_leak $(BUILD)/leakprobe.log; then \
		echo "leak probe: LeakSanitizer reported the deliberate leak (as it must)"; \
	else \
		cat $(BUILD)/leakprobe.log >&2; echo "leak probe: failed for another reason" >&2; exit 1; \
	fi

## test-gpu: the GPU tier on a machine with an NVIDIA driver: the native tier (ctest -L gpu)
## and the Go tier (-tags gpu). Every GPU test skips with the reason where there is no CUDA,
## but fails where a GPU is evident (nvidia-smi lists one, /dev/nvidia0, DEMON_REQUIRE_GPU=1).
test-gpu: deps-test
	cmake -S . -B $(BUILD)/gpu -DDEMON_WITH_CUDA=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	cmake --build $(BUILD)/gpu -j2 --target cuda_gpu_test
	ctest --test-dir $(BUILD)/gpu -L gpu --output-on-failure
	$(GO) test -tags gpu -count=1 ./trt/ ./session/

## gpu-check: the GPU tier, a fault-matrix loop on real GPU memory and a summary (a few minutes).
gpu-check:
	scripts/gpu-check.sh $(ARGS)

## test-browser: the embedded page in headless Chromium against the real ws.Server and
## session.Manager (reference engines); installs Debian's chromium when missing.
test-browser:
	@scripts/deps.sh chromium
	DEMON_REQUIRE_BROWSER=1 $(GO) test -tags browser -count=1 ./web/

## check: formatting, vet, a clean go mod tidy, clang-format.
check:
	@mkdir -p $(BUILD)
	@scripts/deps.sh $(CHECK_DEPS)
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@cp go.mod $(BUILD)/go.mod.bak && cp go.sum $(BUILD)/go.sum.bak && $(GO) mod tidy && \
		if ! diff -q go.mod $(BUILD)/go.mod.bak >/dev/null || ! diff -q go.sum $(BUILD)/go.sum.bak >/dev/null; then \
			cp $(BUILD)/go.mod.bak go.mod; cp $(BUILD)/go.sum.bak go.sum; echo "go mod tidy changes go.mod/go.sum"; exit 1; fi
	clang-format --dry-run -Werror $$(git ls-files 'native/*.cc' 'native/*.h' 'native/*.c')

fmt:
	gofmt -w $$(git ls-files '*.go')
	clang-format -i $$(git ls-files 'native/*.cc' 'native/*.h' 'native/*.c')

## bench: the benchmark harness, short profile (a few minutes on 2 cores), in-process;
## results in bench-out/ (summary.json, summary.md, *.png). Scale up with BENCH_ARGS, e.g.
## BENCH_ARGS="--sessions 100 --cycles 1000 --duration 30s", or --target ws://127.0.0.1:1318/.
bench: deps-run
	$(GO) build -o $(BUILD)/bin/demon-bench ./cmd/demon-bench
	./$(BUILD)/bin/demon-bench --out bench-out $(BENCH_ARGS)

## bench-dit: the tiny-DiT decoder forward at B=4, T=1500 (ms/forward, budget-x against the
## 180 ms real-time tick) and the depth-4 stream tick (tick-ms, overhead, cgo calls, allocs,
## realtime-x), through the Go binding. About a minute on 2 cores.
bench-dit: deps-run
	$(GO) test -run '^$$' -bench 'TinyDiTDecoder|StreamTick$$' -benchtime 10x ./trt/

clean:
	rm -rf $(BUILD)
