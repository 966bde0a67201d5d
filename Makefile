# dbward: one entry point. Everything is built out of tree under $(BUILD).
#   make            build/bin/dbward-agent, dbward-collector and dbward (CLI)
#   make asan       the same with AddressSanitizer + UBSan, in $(BUILD)/asan/
#   make test       unit tests (Criterion) and integration tests (pytest),
#                   each against the plain and the sanitized build
#   make demo       a throwaway PostgreSQL, the agent, an intercepted psql
#   make bench      direct vs PgBouncer vs the agent, interleaved (root)
#   make deps       install the Debian packages the build needs (root)

BUILD ?= build
SANITIZE ?= 0

CC ?= cc
CLANG ?= clang
BPFTOOL ?= bpftool
PYTHON ?= /usr/bin/python3

GEN := $(BUILD)/gen
OBJ := $(BUILD)/obj
BIN := $(BUILD)/bin

ARCH := $(shell uname -m | sed -e 's/x86_64/x86/' -e 's/aarch64/arm64/')

CFLAGS ?= -O2 -g
CFLAGS += -std=gnu11 -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-format-nonliteral \
	  -Wstrict-prototypes -Wmissing-prototypes -fno-strict-aliasing \
	  -D_GNU_SOURCE -I. -I$(GEN) -MMD -MP
# libpg_query.so carries its own copy of the protobuf-c runtime: -lprotobuf-c
# must come first so every binary uses the one real runtime.
COMMON_LIBS := -lprotobuf-c -lzstd -ljansson -lyaml -lssl -lcrypto -lz -lpthread
AGENT_LIBS := -lbpf -lelf -lyaml -lprotobuf-c -lpg_query $(COMMON_LIBS)
COLLECTOR_LIBS := -lyaml -lsqlite3 -lpq -lmicrohttpd $(COMMON_LIBS)
CLI_LIBS := -lcurl $(COMMON_LIBS)
BENCH_LIBS := -lbpf -lelf -lyaml -lprotobuf-c -lpg_query -lsqlite3 -lpq -lmicrohttpd -lcurl \
	      $(COMMON_LIBS)
UNIT_LIBS := $(BENCH_LIBS) -lcriterion

ifeq ($(SANITIZE),1)
CFLAGS += -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

COMMON_SRCS := $(wildcard common/*.c)
AGENT_SRCS := $(filter-out agent/main.c,$(wildcard agent/*.c))
COLLECTOR_SRCS := $(filter-out collector/main.c,$(wildcard collector/*.c))
CLI_SRCS := $(filter-out cli/main.c,$(wildcard cli/*.c))
UNIT_SRCS := $(wildcard tests/unit/*.c)
# Each tests/bench/NAME.c is a benchmark program: build/bin/bench-NAME.
BENCH_SRCS := $(wildcard tests/bench/*.c)
BENCH_BINS := $(BENCH_SRCS:tests/bench/%.c=$(BIN)/bench-%)

# The audit schema, compiled by protoc-c into the build folder.
PROTO_SRC := proto/dbward/v1/audit.proto
PROTO_C := $(GEN)/dbward/v1/audit.pb-c.c
PROTO_H := $(GEN)/dbward/v1/audit.pb-c.h
PROTO_OBJ := $(OBJ)/gen/dbward/v1/audit.pb-c.o

COMMON_OBJS := $(COMMON_SRCS:%.c=$(OBJ)/%.o) $(PROTO_OBJ)
AGENT_OBJS := $(AGENT_SRCS:%.c=$(OBJ)/%.o)
COLLECTOR_OBJS := $(COLLECTOR_SRCS:%.c=$(OBJ)/%.o)
CLI_OBJS := $(CLI_SRCS:%.c=$(OBJ)/%.o)
UNIT_OBJS := $(UNIT_SRCS:%.c=$(OBJ)/%.o)

DEPS_STAMP := $(BUILD)/.deps-ok

.PHONY: all asan test unit-test integration-test demo bench deps clean
.DELETE_ON_ERROR:

BINARIES := $(BIN)/dbward-agent $(BIN)/dbward-collector $(BIN)/dbward

all: $(BINARIES)

# Missing Debian packages are installed once per build tree.
$(DEPS_STAMP): scripts/install-deps.sh | $(BUILD)
	./scripts/install-deps.sh
	touch $@

deps:
	./scripts/install-deps.sh

$(BUILD) $(GEN) $(BIN):
	mkdir -p $@

# --- BPF: vmlinux.h from the running kernel, object, skeleton -------------
$(GEN)/vmlinux.h: | $(GEN) $(DEPS_STAMP)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@

$(GEN)/intercept.bpf.o: bpf/intercept.bpf.c bpf/intercept.h $(GEN)/vmlinux.h | $(GEN)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
		-I$(GEN) -Ibpf -c $< -o $@

$(GEN)/intercept.skel.h: $(GEN)/intercept.bpf.o | $(GEN)
	$(BPFTOOL) gen skeleton $< name intercept_bpf > $@

# Bench only: the sockmap kernel pipe (tests/bench/kpipe.c) and the
# socket-level shortcut for the client-proxy hop (tests/bench/lpipe.c).
BENCH_BPF := kpipe lpipe

$(BENCH_BPF:%=$(GEN)/%.bpf.o): $(GEN)/%.bpf.o: bpf/%.bpf.c $(GEN)/vmlinux.h | $(GEN)
	$(CLANG) -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
		-I$(GEN) -Ibpf -c $< -o $@

$(BENCH_BPF:%=$(GEN)/%.skel.h): $(GEN)/%.skel.h: $(GEN)/%.bpf.o | $(GEN)
	$(BPFTOOL) gen skeleton $< name $*_bpf > $@

$(BENCH_BPF:%=$(OBJ)/tests/bench/%.o): $(OBJ)/tests/bench/%.o: $(GEN)/%.skel.h

# --- protobuf --------------------------------------------------------------
# One run writes both files: a grouped target, so that make knows the
# header is new too and rebuilds everything that includes it.
$(PROTO_C) $(PROTO_H) &: $(PROTO_SRC) | $(GEN) $(DEPS_STAMP)
	protoc-c --c_out=$(GEN) -Iproto $<

$(PROTO_OBJ): $(PROTO_C)
	@mkdir -p $(@D)
	$(CC) $(filter-out -Wmissing-prototypes,$(CFLAGS)) -c $< -o $@

# --- user space ------------------------------------------------------------
$(OBJ)/%.o: %.c | $(GEN)/intercept.skel.h $(PROTO_H) $(DEPS_STAMP)
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -c $< -o $@

$(BIN)/dbward-agent: $(OBJ)/agent/main.o $(AGENT_OBJS) $(COMMON_OBJS) | $(BIN)
	$(CC) $(LDFLAGS) $^ $(AGENT_LIBS) -o $@

$(BIN)/dbward-collector: $(OBJ)/collector/main.o $(COLLECTOR_OBJS) $(COMMON_OBJS) | $(BIN)
	$(CC) $(LDFLAGS) $^ $(COLLECTOR_LIBS) -o $@

$(BIN)/dbward: $(OBJ)/cli/main.o $(CLI_OBJS) $(COMMON_OBJS) | $(BIN)
	$(CC) $(LDFLAGS) $^ $(CLI_LIBS) -o $@

$(BIN)/unit-tests: $(UNIT_OBJS) $(AGENT_OBJS) $(COLLECTOR_OBJS) $(CLI_OBJS) $(COMMON_OBJS) | $(BIN)
	$(CC) $(LDFLAGS) $^ $(UNIT_LIBS) -o $@

$(BIN)/bench-%: $(OBJ)/tests/bench/%.o $(AGENT_OBJS) $(COLLECTOR_OBJS) $(COMMON_OBJS) | $(BIN)
	$(CC) $(LDFLAGS) $^ $(BENCH_LIBS) -o $@

# Inside $(BUILD), so a private BUILD gets a sanitized build of its own;
# the dependencies were checked once, for $(BUILD).
ASAN_BUILD := $(BUILD)/asan
ASAN_BIN := $(ASAN_BUILD)/bin

asan: $(DEPS_STAMP)
	$(MAKE) BUILD=$(ASAN_BUILD) SANITIZE=1 DEPS_STAMP=$(abspath $(DEPS_STAMP)) \
		$(ASAN_BIN)/dbward-agent $(ASAN_BIN)/dbward-collector $(ASAN_BIN)/dbward \
		$(ASAN_BIN)/unit-tests

# --- tests -----------------------------------------------------------------
# Unit tests run against both builds; integration tests drive the real
# agent (root: BPF, cgroups, network namespaces), again both builds.
SAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:exitcode=86 \
	   UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

test: unit-test integration-test

# Criterion passes a test whose worker LSan or UBSan complained in, so the
# sanitized run also fails on any sanitizer report in its output.
SAN_REPORT := 'ERROR: (Leak|Address)Sanitizer|runtime error:'

unit-test: $(BIN)/unit-tests asan
	$(BIN)/unit-tests --jobs 2
	$(SAN_ENV) $(ASAN_BIN)/unit-tests --jobs 1 >$(ASAN_BUILD)/unit-tests.log 2>&1; \
		status=$$?; cat $(ASAN_BUILD)/unit-tests.log; \
		if grep -qE $(SAN_REPORT) $(ASAN_BUILD)/unit-tests.log; then \
			echo "unit-test: sanitizer report above" >&2; exit 1; fi; \
		exit $$status

integration-test: all $(BIN)/unit-tests asan
	DBWARD_BIN=$(abspath $(BIN)) $(PYTHON) -m pytest -q tests/integration
	$(SAN_ENV) DBWARD_BIN=$(abspath $(ASAN_BIN)) $(PYTHON) -m pytest -q tests/integration

demo: all
	./scripts/demo.sh $(abspath $(BIN))

bench: all $(BENCH_BINS)
	$(PYTHON) tests/bench/run.py --bin $(abspath $(BIN))

clean:
	rm -rf $(BUILD)

-include $(shell find $(OBJ) -name '*.d' 2>/dev/null)
