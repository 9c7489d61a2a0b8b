# ocrpool: a memory-bounded OCR job system.
#
#   make            build build/ocrpool
#   make demo       install what is missing, build, OCR the bundled sample
#   make test       install what is missing, build, run every test
#   make asan       the tests under AddressSanitizer + UBSan (build-asan/)
#   make bench      benchmarks against the peers (bench/)
#   make install    PREFIX=/usr/local DESTDIR=
#   make fuzz       each libFuzzer harness (fuzz/) for FUZZ_S seconds (build-fuzz/)

PREFIX   ?= /usr/local
DESTDIR  ?=
BUILD    ?= build
PKGS     := tesseract lept vips jansson sqlite3 libmicrohttpd hiredis libqpdf
VERSION  := 0.1.0

CC       ?= cc
CXX      ?= c++
OPT      ?= -O2 -g
CFLAGS   += -std=c17 -Wall -Wextra -Werror -Wformat=2 -Wshadow -Wno-unused-parameter \
            -D_GNU_SOURCE -DOCP_VERSION='"$(VERSION)"' -MMD -MP -Isrc $(OPT)
# C++ only where libtesseract's C API stops (src/engine/tess_layout.cpp).
CXXFLAGS += -std=c++17 -Wall -Wextra -Werror -Wno-unused-parameter -D_GNU_SOURCE -MMD -MP -Isrc $(OPT)
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
LDLIBS   += $(PKG_LIBS) -lstdc++ -lz -lm -ldl

SRC      := $(sort $(shell find src -name '*.c'))
LIBSRC   := $(filter-out src/cli/%,$(SRC))
CLISRC   := $(filter src/cli/%,$(SRC))
CXXSRC   := $(sort $(shell find src -name '*.cpp'))
LIBOBJ   := $(LIBSRC:%.c=$(BUILD)/%.o) $(CXXSRC:%.cpp=$(BUILD)/%.o)
CLIOBJ   := $(CLISRC:%.c=$(BUILD)/%.o)

# ---- CUDA (src/gpu/cuda/, issue 17) ---------------------------------------------------------
# Built when nvcc is found (/usr/local/cuda/bin/nvcc, or on PATH); `make CUDA=0` leaves it out,
# and src/gpu/cuda_stub.c stands in ("built without CUDA"). The runtime is linked statically:
# it loads the driver (libcuda.so.1) only when a context is opened, so the binary starts where
# there is no NVIDIA driver. -fmad=false and -ffp-contract=off: no fused multiply-add where
# the CPU path has none (bit parity). SASS for sm_90 (H100/H200), PTX for 7.5 and later.
NVCC      ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
CUDA      ?= $(if $(NVCC),1,0)
CUDA_ARCH ?= -gencode arch=compute_90,code=sm_90 -gencode arch=compute_75,code=compute_75
ifeq ($(CUDA),1)
CUDA_HOME := $(patsubst %/bin/nvcc,%,$(NVCC))
CUSRC     := $(sort $(wildcard src/gpu/cuda/*.cu))
CUOBJ     := $(CUSRC:%.cu=$(BUILD)/%.o)
LIBOBJ    := $(filter-out $(BUILD)/src/gpu/cuda_stub.o,$(LIBOBJ)) $(CUOBJ)
NVCCFLAGS := -std=c++17 -O3 -g -fmad=false $(CUDA_ARCH) -Isrc \
             -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter,-ffp-contract=off,-D_GNU_SOURCE
# Under `make asan` the host side (the emulated kernels included) is instrumented too.
CUDA_SAN  := $(filter-out -fsanitize=fuzzer%,$(filter -fsanitize=% -fno-sanitize-recover=% \
             -fno-omit-frame-pointer,$(OPT)))
cuda_comma := ,
NVCCFLAGS += $(foreach f,$(subst $(cuda_comma), -fsanitize=,$(CUDA_SAN)),-Xcompiler $(f))
LDLIBS    += -L$(CUDA_HOME)/lib64 -lcudart_static -lrt -lpthread

$(BUILD)/%.o: %.cu
	@mkdir -p $(dir $@)
	@echo "  NVCC $<"
	@$(NVCC) $(NVCCFLAGS) -MMD -MP -MF $(@:.o=.d) -c -o $@ $<

endif
UNITSRC  := $(sort $(wildcard tests/unit/test_*.c))
UNITBIN  := $(UNITSRC:tests/unit/%.c=$(BUILD)/tests/%)
# Helpers the integration tests and the benchmarks share (tools/): ours in C, and the
# libtesseract side of the lstm parity.
TOOLBIN  := $(BUILD)/tools/lstm_line $(BUILD)/tools/lstm_dict $(BUILD)/tools/tess_timesteps \
            $(BUILD)/tools/lstm_cuda
# The libFuzzer harnesses (fuzz/fuzz_NAME.c; see "Fuzzing" below).
FUZZ_S     ?= 60
FUZZ_JOBS  ?= 1
FUZZ_RUNS  ?=
FUZZ_CC    ?= clang-14
FUZZ_CXX   ?= clang++-14
FUZZ_SAN   := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_NAMES := $(sort $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c)))
FUZZBIN    := $(FUZZ_NAMES:%=build-fuzz/fuzz/fuzz_%)
REPLAYBIN  := $(FUZZ_NAMES:%=$(BUILD)/fuzz/replay_%)

.SECONDARY:
.PHONY: all deps demo test unit unit-bins integration asan bench install clean format list-gpus gpu-test worker worker-stop memory-monitor fuzz fuzz-bins

all: $(BUILD)/ocrpool

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(BUILD)/%.o: %.cpp
	@mkdir -p $(dir $@)
	@echo "  CXX $<"
	@$(CXX) $(CXXFLAGS) $(PKG_CFLAGS) -c -o $@ $<

$(BUILD)/libocrpool.a: $(LIBOBJ)
	@rm -f $@
	@ar rcs $@ $^

# The sample document, linked in for `ocrpool gpu-test` (symbols _binary_samples_sample_pdf_*).
$(BUILD)/sample.o: samples/sample.pdf
	@mkdir -p $(dir $@)
	@ld -r -b binary -z noexecstack -o $@ $<

$(BUILD)/ocrpool: $(CLIOBJ) $(BUILD)/sample.o $(BUILD)/libocrpool.a
	@echo "  LD $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/unit/%.o $(BUILD)/libocrpool.a
	@mkdir -p $(dir $@)
	@echo "  LD $@"
	@$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

$(BUILD)/tools/lstm_%: tools/lstm_%.c $(BUILD)/libocrpool.a
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libocrpool.a $(LDLIBS)

$(BUILD)/tools/tess_timesteps: tools/tess_timesteps.cpp
	@mkdir -p $(dir $@)
	@echo "  CXX $<"
	@$(CXX) -O1 -Wall -Werror $(LDFLAGS) -o $@ $< $(shell pkg-config --cflags --libs tesseract lept)

$(BUILD)/tests/unit/%.o: tests/unit/%.c
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

deps:
	@scripts/install-deps.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@echo "== ocrpool ocr -l san+eng samples/sample.pdf =="
	@$(BUILD)/ocrpool ocr -l san+eng samples/sample.pdf

# `make test` = install deps, build the binary and the unit tests, run all.
test: deps
	@$(MAKE) --no-print-directory all $(UNITBIN) $(TOOLBIN) $(REPLAYBIN)
	@BUILD=$(BUILD) tests/run.sh

unit-bins: $(UNITBIN) $(TOOLBIN) $(REPLAYBIN)

unit: all $(UNITBIN) $(REPLAYBIN)
	@BUILD=$(BUILD) tests/run.sh unit

integration: all
	@BUILD=$(BUILD) tests/run.sh integration $(T)

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan \
	    OPT='-O1 -g -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined' \
	    LDFLAGS='-fsanitize=address,undefined' all unit-bins
	@BUILD=build-asan OCP_ASAN=1 tests/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bench/run.sh
	@BUILD=$(BUILD) bench/pool.sh
	@BUILD=$(BUILD) bench/celery.sh
	@BUILD=$(BUILD) bench/lstm.sh
	@BUILD=$(BUILD) bench/models.sh
	@BUILD=$(BUILD) bench/recognizer.sh
	@BUILD=$(BUILD) bench/orient.sh
	@BUILD=$(BUILD) bench/queue.sh
	@BUILD=$(BUILD) bench/page_memory.sh
	@BUILD=$(BUILD) bench/mix.sh

install: all
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 $(BUILD)/ocrpool $(DESTDIR)$(PREFIX)/bin/ocrpool

# The reference system's names (make celery / celery-stop / memory-monitor / list-gpus /
# test-surya-gpu). WORKER_ARGS passes settings: make worker WORKER_ARGS='-c 2 --broker ...'.
worker: all
	@$(BUILD)/ocrpool worker $(WORKER_ARGS)

worker-stop: all
	@$(BUILD)/ocrpool stop

memory-monitor: all
	@$(BUILD)/ocrpool monitor --watch 2

list-gpus: all
	@$(BUILD)/ocrpool gpus

gpu-test: all
	@$(BUILD)/ocrpool gpu-test

# `make chaos` (not part of `make test`): PAGES pages (1000) through two nodes on Redis,
# then two on SQLite, with workers, zygotes, masters and Redis killed under them;
# its last line is "chaos: N pages, K kills, L lost, D duplicated" (tests/chaos.sh).
PAGES ?= 1000
.PHONY: chaos
chaos: deps
	@$(MAKE) --no-print-directory all
	@tests/data/make-fixtures.sh $(BUILD)/fixtures
	@BUILD=$(BUILD) tests/chaos.sh $(PAGES)

format:
	clang-format -i $(SRC) $(UNITSRC) $(shell find src -name '*.h')

# ---- Fuzzing (fuzz/, README "Fuzzing") ----------------------------------------------------
# `make fuzz` builds the library again in build-fuzz/ with clang-14's coverage and
# sanitizers, links each harness fuzz/fuzz_NAME.c with libFuzzer, and runs each for FUZZ_S
# seconds (FUZZ_JOBS at once) from a scratch copy of fuzz/corpus/NAME (fuzz/run.sh); crash
# inputs go to build-fuzz/crashes/NAME/. The same harnesses, linked with fuzz/replay.c by
# the normal compiler (or `make asan`'s), replay fuzz/regress and fuzz/corpus in the tests.

fuzz: deps
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=$(FUZZ_CC) CXX=$(FUZZ_CXX) \
	    OPT='-O1 -g -fsanitize=fuzzer-no-link $(FUZZ_SAN) -Wno-error -Wno-format-nonliteral' fuzz-bins
	@FUZZ_S=$(FUZZ_S) FUZZ_JOBS=$(FUZZ_JOBS) FUZZ_RUNS=$(FUZZ_RUNS) fuzz/run.sh $(FUZZ_NAMES)

# With BUILD=build-fuzz and clang (as `make fuzz` calls it).
fuzz-bins: $(FUZZBIN)

build-fuzz/fuzz/fuzz_%: fuzz/fuzz_%.c fuzz/common.c fuzz/common.h build-fuzz/libocrpool.a
	@mkdir -p $(dir $@)
	@echo "  FUZZ $<"
	@$(CC) $(CFLAGS) $(PKG_CFLAGS) -fsanitize=fuzzer $(FUZZ_SAN) -fsanitize-link-c++-runtime \
	    -o $@ $< fuzz/common.c build-fuzz/libocrpool.a $(LDLIBS)

$(BUILD)/fuzz/replay_%: fuzz/fuzz_%.c fuzz/common.c fuzz/common.h fuzz/replay.c $(BUILD)/libocrpool.a
	@mkdir -p $(dir $@)
	@echo "  CC $<"
	@$(CC) $(CFLAGS) $(PKG_CFLAGS) $(LDFLAGS) -o $@ $< fuzz/common.c fuzz/replay.c \
	    $(BUILD)/libocrpool.a $(LDLIBS)

-include $(REPLAYBIN:=.d)

clean:
	rm -rf build build-asan build-fuzz

-include $(LIBOBJ:.o=.d) $(CLIOBJ:.o=.d) $(UNITSRC:tests/unit/%.c=$(BUILD)/tests/unit/%.d)
