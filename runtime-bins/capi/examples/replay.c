/*
 * replay.c: a C training loop steered by a frozen LHOPT policy through the C API.
 *
 * Instead of a real model it replays recorded per-step statistics from a text file, so its
 * decisions can be compared with the Rust library's. Halfway through the run it saves the
 * controller's state, frees the controller and continues with a fresh one restored from that
 * state, as a resumed training job would.
 *
 *   replay POLICY.lhp INPUTS.txt
 *
 * INPUTS.txt: a line "T K N" (steps, decisions, tensors), then T step lines
 *   "loss clipped" followed by N groups of the 12 reduction fields (lhopt.h field order),
 * then K decision lines "param_norm displacement eval_loss" ("nan"/"inf" allowed).
 * Output: one line per decision, the eight hyperparameters as raw float bits in hex, then the
 * restart operation and register.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lhopt.h"

static void die_status(const char *what, LhoptStatus status) {
    char message[512];
    lhopt_last_error(message, sizeof message);
    fprintf(stderr, "replay: %s failed: %s: %s\n", what, lhopt_status_name(status), message);
    exit(1);
}

#define CHECK(call)                                                                            \
    do {                                                                                       \
        LhoptStatus status_ = (call);                                                          \
        if (status_ != LHOPT_STATUS_OK) die_status(#call, status_);                            \
    } while (0)

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(1); }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *bytes = malloc(size > 0 ? (size_t)size : 1);
    if (!bytes || fread(bytes, 1, (size_t)size, f) != (size_t)size) { perror(path); exit(1); }
    fclose(f);
    *len = (size_t)size;
    return bytes;
}

static float read_float(FILE *f) {
    char word[64];
    if (fscanf(f, "%63s", word) != 1) { fprintf(stderr, "replay: inputs end early\n"); exit(1); }
    return strtof(word, NULL);
}

static uint64_t read_u64(FILE *f) {
    uint64_t x;
    if (fscanf(f, "%" SCNu64, &x) != 1) { fprintf(stderr, "replay: inputs end early\n"); exit(1); }
    return x;
}

static uint32_t bits(float x) {
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: %s POLICY.lhp INPUTS.txt\n", argv[0]);
        return 2;
    }
    size_t policy_len;
    unsigned char *policy = read_file(argv[1], &policy_len);
    FILE *in = fopen(argv[2], "r");
    if (!in) { perror(argv[2]); return 1; }
    uint64_t total_steps;
    unsigned decisions, n_tensors;
    if (fscanf(in, "%" SCNu64 " %u %u", &total_steps, &decisions, &n_tensors) != 3) {
        fprintf(stderr, "replay: bad header line\n");
        return 1;
    }

    LhoptController *ctrl = NULL;
    /* NULL initial hyperparameters: the spec's; NULL seed: greedy actions. */
    CHECK(lhopt_controller_new(policy, policy_len, total_steps, decisions, NULL, NULL, &ctrl));

    /* All step lines first (a real runtime computes these as it trains); the decision lines
     * that follow them are read as decisions come due. */
    float *loss = malloc(sizeof(float) * total_steps);
    int *clipped = malloc(sizeof(int) * total_steps);
    LhoptTensorReductions *all = calloc(total_steps * n_tensors, sizeof *all);
    for (uint64_t t = 0; t < total_steps; t++) {
        loss[t] = read_float(in);
        clipped[t] = (int)read_u64(in);
        for (unsigned i = 0; i < n_tensors; i++) {
            LhoptTensorReductions *r = &all[t * n_tensors + i];
            r->numel = read_u64(in);
            r->grad_norm = read_float(in);
            r->mhat_norm = read_float(in);
            r->mhat_minus_grad_norm = read_float(in);
            r->param_norm = read_float(in);
            r->update_norm = read_float(in);
            r->lr_p = read_float(in);
            r->grad_dot_mhat = read_float(in);
            r->grad_dot_param = read_float(in);
            r->grad_dot_update = read_float(in);
            r->count_v_gt_eps = read_float(in);
            r->sum_log_abs_update = read_float(in);
        }
    }

    unsigned made = 0;
    for (uint64_t t = 0; t < total_steps; t++) {
        bool want = false;
        CHECK(lhopt_controller_wants_reductions(ctrl, &want));
        LhoptStepStatus step_status;
        CHECK(lhopt_controller_observe(ctrl, loss[t], want ? &all[t * n_tensors] : NULL,
                                       want ? n_tensors : 0, clipped[t] != 0, &step_status));
        if (step_status != LHOPT_STEP_STATUS_DECISION_DUE) continue;

        float param_norm = read_float(in), displacement = read_float(in), eval = read_float(in);
        LhoptDecision d;
        CHECK(lhopt_controller_decide(ctrl, param_norm, displacement, eval, &d));
        made++;
        const LhoptHyperparams *h = &d.hyper;
        printf("decision %u %08" PRIx32 " %08" PRIx32 " %08" PRIx32 " %08" PRIx32 " %08" PRIx32
               " %08" PRIx32 " %08" PRIx32 " %08" PRIx32 " restart %d %u\n",
               made, bits(h->lr), bits(h->ombeta1), bits(h->ombeta2), bits(h->eps), bits(h->wd),
               bits(h->clip_frac), bits(h->clip_ombeta), bits(h->lamb_ombeta), (int)d.restart,
               (unsigned)d.restart_register);

        if (made == decisions / 2) {
            /* Resume from saved state: ask for the size, save, start over, restore. */
            size_t needed = 0;
            LhoptStatus s = lhopt_controller_save_state(ctrl, NULL, 0, &needed);
            if (s != LHOPT_STATUS_BUFFER_TOO_SMALL) die_status("size query", s);
            unsigned char *state = malloc(needed);
            size_t written = 0;
            CHECK(lhopt_controller_save_state(ctrl, state, needed, &written));
            lhopt_controller_free(ctrl);
            ctrl = NULL;
            CHECK(lhopt_controller_new(policy, policy_len, total_steps, decisions, NULL, NULL,
                                       &ctrl));
            CHECK(lhopt_controller_restore_state(ctrl, state, written));
            free(state);
        }
    }
    lhopt_controller_free(ctrl);
    free(all);
    free(clipped);
    free(loss);
    free(policy);
    fclose(in);
    return 0;
}
