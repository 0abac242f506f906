/* The regions stage on the CPU, compiled: threshold and measure every map on the working grid, and cut its mask.
 *
 * Python side: galore/regions.py (``WorkingGrid.compiled``, ``_measure_compiled``, ``_masks_compiled``). The same
 * numbers as the torch paths there, exactly: a cell's value is computed with the same float32 operations in the
 * same order as ``WorkingGrid.upsample`` (columns first, then rows; a * w0 + b * w1 as two products and one sum,
 * each rounded: built with -ffp-contract=off, never -ffast-math), so tau, the counts and the masks are those of a
 * sort over every cell, ties included.
 *
 * The design is the torch block path's (``_Blocks``), without its few hundred tensor calls per batch: the grid is
 * cut into tiles of at most TILE x TILE cells that share their two feature rows and columns, inside which a map is
 * bilinear, so a tile's four corner values bound it (widened by MARGIN of the map's largest magnitude for
 * rounding). tau is bracketed from the bounds, and only the tiles that straddle the bracket are upsampled; one
 * quickselect runs over the cells of one histogram slice of it. The GIL is released while maps are measured.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#define TILE 8          /* most cells of a tile's side (galore.regions.BLOCK) */
#define BINS 1024       /* slices of a bracket: a histogram narrows it, the quickselect sees one slice's values */
#define MARGIN 4e-6f    /* of a map's largest magnitude: >> the few roundings of the two lerps (_Blocks.MARGIN) */

typedef struct {
    const int64_t *i0, *i1; /* (G,) the two feature cells of each working cell along this axis */
    const float *w0, *w1;   /* (G,) their weights */
} Axis;

typedef struct {
    int G, h, w;
    Axis y, x;
    int ny, nx;                      /* segments along each axis: runs of at most TILE cells sharing i0 */
    int32_t *y_first, *y_len, *x_first, *x_len;
    int32_t *size;                   /* (ny * nx) cells per tile */
    float *lo, *hi;                  /* (ny * nx) bounds of the current map's values in each tile */
    float *cols;                     /* (h, G) the current map's first lerp */
    float *cand;                     /* (max(G * G, 2 G)) candidate values; rows of bounds in ``load`` */
    int16_t *slots;                  /* (max(G * G, tiles)) their slots */
    float tile[TILE * TILE];         /* one tile's values */
} Grid;

/* The cells of row r, columns [j0, j0 + n), of the current map: the second lerp (galore.regions._Axis.lerp). */
static inline void cells(const Grid *g, int r, int j0, int n, float *restrict out) {
    const float *a = g->cols + (size_t)g->y.i0[r] * g->G + j0, *b = g->cols + (size_t)g->y.i1[r] * g->G + j0;
    const float w0 = g->y.w0[r], w1 = g->y.w1[r];
    for (int j = 0; j < n; j++) {
        const float p = a[j] * w0;
        const float q = b[j] * w1;
        out[j] = p + q;
    }
}

/* Tile t's values, row by row, into g->tile; returns their count. */
static int tile_values(Grid *g, int t) {
    const int sy = t / g->nx, sx = t % g->nx, r0 = g->y_first[sy], n = g->x_len[sx];
    for (int r = 0; r < g->y_len[sy]; r++) cells(g, r0 + r, g->x_first[sx], n, g->tile + r * n);
    return g->size[t];
}

/* Load one map: its first lerp (columns) and each tile's bounds from its four corners. */
static void load(Grid *g, const float *map) {
    const int G = g->G;
    float peak = 0.0f;
    for (int i = 0; i < g->h * g->w; i++) peak = fabsf(map[i]) > peak ? fabsf(map[i]) : peak;
    const float margin = MARGIN * peak;
    for (int r = 0; r < g->h; r++) {
        const float *row = map + (size_t)r * g->w;
        float *c = g->cols + (size_t)r * G;
        for (int j = 0; j < G; j++) {
            const float a = row[g->x.i0[j]] * g->x.w0[j];
            const float b = row[g->x.i1[j]] * g->x.w1[j];
            c[j] = a + b;
        }
    }
    float *top = g->cand, *bottom = g->cand + G; /* a band's first and last rows (cand is free until selection) */
    for (int sy = 0, t = 0; sy < g->ny; sy++) {
        cells(g, g->y_first[sy], 0, G, top);
        cells(g, g->y_first[sy] + g->y_len[sy] - 1, 0, G, bottom);
        for (int sx = 0; sx < g->nx; sx++, t++) {
            const int j0 = g->x_first[sx], j1 = j0 + g->x_len[sx] - 1;
            const float a = top[j0], b = top[j1], c = bottom[j0], d = bottom[j1];
            const float ab_lo = a < b ? a : b, cd_lo = c < d ? c : d, ab_hi = a > b ? a : b, cd_hi = c > d ? c : d;
            g->lo[t] = (ab_lo < cd_lo ? ab_lo : cd_lo) - margin;
            g->hi[t] = (ab_hi > cd_hi ? ab_hi : cd_hi) + margin;
        }
    }
}

/* The float64 sum of v[0..n) (four partial sums). */
static double sum_of(const float *v, int n) {
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int j = 0;
    for (; j + 4 <= n; j += 4)
        for (int l = 0; l < 4; l++) s[l] += v[j + l];
    for (; j < n; j++) s[0] += v[j];
    return (s[0] + s[1]) + (s[2] + s[3]);
}

static inline void swap_f(float *a, int i, int j) { const float t = a[i]; a[i] = a[j]; a[j] = t; }

static inline float median3(float a, float b, float c) {
    if (a > b) { const float t = a; a = b; b = t; }
    if (b > c) b = c;
    return a > b ? a : b;
}

/* The k-th largest of key[0..n) (1 <= k <= n): a quickselect with three-way partitions. Reorders key. */
static float kth(float *key, int n, int64_t k) {
    int lo = 0, hi = n;
    for (;;) {
        const float p = median3(key[lo], key[lo + (hi - lo) / 2], key[hi - 1]);
        int gt = lo, i = lo, lt = hi; /* [lo, gt) > p, [gt, i) == p, [lt, hi) < p */
        while (i < lt) {
            if (key[i] > p) {
                swap_f(key, i++, gt++);
            } else if (key[i] < p) {
                swap_f(key, i, --lt);
            } else {
                i++;
            }
        }
        if (k <= gt - lo) {
            hi = gt;
        } else if (k <= lt - lo) {
            return p;
        } else {
            k -= lt - lo;
            lo = lt;
        }
    }
}

/* A bracket end from the tiles' bounds ``bound``: the bounds are sliced into BINS slots over [least, most] (float64,
 * nondecreasing in the bound), the first slot from the top whose tiles, with those above, hold k cells is found,
 * and its least bound (``lower``) or largest (else) returned. Lower: the tiles whose lower bound reaches it hold k
 * cells, so k cells reach it: tau >= it. Upper: the tiles whose upper bound exceeds it hold fewer than k cells, yet
 * the cells >= tau (at least k) lie in tiles whose upper bound reaches tau: tau <= it. */
static float bracket(const Grid *g, const float *bound, float least, float most, int64_t k, int lower) {
    const int tiles = g->ny * g->nx;
    if (!(most > least)) return lower ? least : most;
    int32_t hist[BINS] = {0};
    int16_t *slot = g->slots;
    const double scale = BINS / ((double)most - (double)least);
    for (int t = 0; t < tiles; t++) {
        const double s = ((double)bound[t] - (double)least) * scale;
        slot[t] = (int16_t)(s < BINS - 1 ? (int)s : BINS - 1);
        hist[slot[t]] += g->size[t];
    }
    int b = BINS - 1;
    for (int64_t seen = hist[b]; seen < k; seen += hist[--b]) {}
    float out = lower ? INFINITY : -INFINITY;
    for (int t = 0; t < tiles; t++)
        if (slot[t] == b) out = lower ? (bound[t] < out ? bound[t] : out) : (bound[t] > out ? bound[t] : out);
    return out;
}

/* ``kth_largest`` without the bounds: every cell upsampled and one quickselect over all of them. */
static float exact_kth(Grid *g, int64_t k, int64_t *count, double *sum) {
    const int G = g->G, N = G * G;
    for (int r = 0; r < G; r++) cells(g, r, 0, G, g->cand + (size_t)r * G);
    const float tau = kth(g->cand, N, k);
    int64_t n = 0;
    double total = 0.0;
    for (int i = 0; i < N; i++) {
        const int at = g->cand[i] >= tau;
        n += at;
        total += at ? (double)g->cand[i] : 0.0;
    }
    *count = n;
    *sum = total;
    return tau;
}

/* The k-th largest cell value (1 <= k <= G * G) of the loaded map, with the count and the float64 sum of the
 * cells >= it (more than k only on ties). t_lo <= tau <= t_hi from the bounds (``bracket``); the cells of the
 * tiles that straddle [t_lo, t_hi] and lie in it are the candidates. Each gets a slot, floor((v - t_lo) / (t_hi -
 * t_lo) x BINS) in float32, clamped to [0, BINS): nondecreasing in the value, so a higher slot holds only greater
 * values. One histogram names the slot that holds tau; the quickselect runs on that slot's values. */
static float kth_largest(Grid *g, int64_t k, int64_t *count, double *sum) {
    const int tiles = g->ny * g->nx;
    float least = g->lo[0], most = g->hi[0];
    for (int t = 1; t < tiles; t++) {
        least = g->lo[t] < least ? g->lo[t] : least;
        most = g->hi[t] > most ? g->hi[t] : most;
    }
    const float t_lo = bracket(g, g->lo, least, most, k, 1);
    const float t_hi = bracket(g, g->hi, least, most, k, 0);
    int64_t above = 0; /* cells > t_hi: all above tau */
    double total = 0.0;
    int n = 0;
    float *cand = g->cand;
    int16_t *slot = g->slots;
    int32_t hist[BINS] = {0};
    /* a candidate's slot in float32: (v - t_lo) and x scale are rounded monotonically, so nondecreasing in v */
    const float span = (float)BINS / (t_hi - t_lo);
    const float scale = !(t_hi > t_lo) ? 0.0f : span < FLT_MAX ? span : FLT_MAX;
    for (int t = 0; t < tiles; t++) {
        if (g->hi[t] < t_lo) continue; /* every cell below tau */
        const int size = tile_values(g, t);
        if (g->lo[t] > t_hi) { /* every cell above tau */
            total += sum_of(g->tile, size);
            above += size;
            continue;
        }
        for (int i = 0; i < size; i++) { /* branch-free: the values are not predictable */
            const float x = g->tile[i];
            const int over = x > t_hi, in = !over & (x >= t_lo);
            above += over;
            total += over ? (double)x : 0.0;
            const float f = (x - t_lo) * scale; /* >= 0 for a candidate; NaN-free: finite maps */
            const int b = in ? (f < BINS - 1 ? (int)f : BINS - 1) : 0;
            cand[n] = x;
            slot[n] = (int16_t)b;
            hist[b] += in;
            n += in;
        }
    }
    int64_t rest = k - above; /* >= 1: fewer than k cells exceed t_hi, at least k reach tau >= t_lo */
    if (rest < 1 || rest > n) return exact_kth(g, k, count, sum); /* bounds that did not hold: never seen */
    float tau = t_lo;
    if (t_hi > t_lo) {
        int b = BINS - 1;
        for (int64_t seen = hist[b]; seen < rest; seen += hist[--b]) {}
        int64_t higher = 0; /* candidates in slots above b: all above tau */
        double higher_sum = 0.0;
        int m = 0;
        for (int i = 0; i < n; i++) { /* slot b's values to the front (m <= i: in place) */
            const float x = cand[i];
            higher += slot[i] > b;
            higher_sum += slot[i] > b ? (double)x : 0.0;
            cand[m] = x;
            m += slot[i] == b;
        }
        above += higher, total += higher_sum, rest -= higher, n = m;
        tau = kth(cand, n, rest);
    }
    for (int i = 0; i < n; i++) { /* the candidates left that reach tau (ties included) */
        const int at = cand[i] >= tau;
        above += at;
        total += at ? (double)cand[i] : 0.0;
    }
    *count = above;
    *sum = total;
    return tau;
}

/* The cells >= t of the loaded map: their count and float64 sum. */
static void at_least(Grid *g, float t, int64_t *count, double *sum) {
    int64_t n = 0;
    double total = 0.0;
    for (int tt = 0; tt < g->ny * g->nx; tt++) {
        if (g->hi[tt] < t) continue;
        const int size = tile_values(g, tt);
        if (g->lo[tt] >= t) {
            n += size;
            total += sum_of(g->tile, size);
            continue;
        }
        for (int i = 0; i < size; i++) {
            const int at = g->tile[i] >= t;
            n += at;
            total += at ? (double)g->tile[i] : 0.0;
        }
    }
    *count = n;
    *sum = total;
}

/* The cells > 0 of the loaded map. */
static int64_t positive_cells(Grid *g) {
    int64_t n = 0;
    for (int t = 0; t < g->ny * g->nx; t++) {
        if (g->hi[t] <= 0.0f) continue;
        if (g->lo[t] > 0.0f) {
            n += g->size[t];
            continue;
        }
        const int size = tile_values(g, t);
        for (int i = 0; i < size; i++) n += g->tile[i] > 0.0f;
    }
    return n;
}

/* Runs of at most TILE cells sharing i0 along an axis of G cells (``_Axis``'s segments); returns their number. */
static int segments(const int64_t *i0, int G, int32_t *first, int32_t *len) {
    int n = 0;
    for (int r = 0; r < G; r++) {
        if (n == 0 || i0[r] != i0[r - 1] || r - first[n - 1] >= TILE) first[n++] = r;
        len[n - 1] = r - first[n - 1] + 1;
    }
    return n;
}

/* A map's scratch (bounds, first lerp, candidates, slots), carved from ``at``; ``scratch_bytes`` of it. */
static size_t scratch_bytes(int G, int h) {
    const size_t N = (size_t)G * G;
    return ((4 * N + 63) & ~(size_t)63) * 2 + ((sizeof(float) * (size_t)h * G + 63) & ~(size_t)63)
           + ((sizeof(float) * (N > 2 * (size_t)G ? N : 2 * (size_t)G) + 63) & ~(size_t)63)
           + ((sizeof(int16_t) * N + 63) & ~(size_t)63) + 64;
}

static void *carve(char **at, size_t bytes) {
    void *out = *at;
    *at += (bytes + 63) & ~(size_t)63;
    return out;
}

static void scratch(Grid *g, char *data) {
    const size_t N = (size_t)g->G * g->G; /* at most one tile per cell */
    char *at = (char *)(((uintptr_t)data + 63) & ~(uintptr_t)63);
    g->lo = carve(&at, 4 * N), g->hi = carve(&at, 4 * N);
    g->cols = carve(&at, sizeof(float) * (size_t)g->h * g->G);
    g->cand = carve(&at, sizeof(float) * (N > 2 * (size_t)g->G ? N : 2 * (size_t)g->G));
    g->slots = carve(&at, sizeof(int16_t) * N);
}

/* The calling thread's arena, grown to the largest grid seen and kept, so that a call does not map and fault in
 * fresh pages (glibc maps blocks of this size). Helper threads (``run``) allocate their own per call. */
static _Thread_local struct { char *data; size_t size; } arena;

/* Grid and scratch for a G x G grid over h x w maps on the calling thread; the axes are set by ``axes``, then the
 * tiles by ``tiles``. */
static int grid_init(Grid *g, int G, int h, int w) {
    g->G = G, g->h = h, g->w = w;
    const size_t shared = 4 * 4 * ((size_t)G + 16) + 4 * (size_t)G * G + 64 * 6, need = shared + scratch_bytes(G, h);
    if (need > arena.size) {
        char *grown = realloc(arena.data, need);
        if (!grown) return -1;
        arena.data = grown, arena.size = need;
    }
    char *at = (char *)(((uintptr_t)arena.data + 63) & ~(uintptr_t)63);
    g->y_first = carve(&at, 4 * (size_t)G), g->y_len = carve(&at, 4 * (size_t)G);
    g->x_first = carve(&at, 4 * (size_t)G), g->x_len = carve(&at, 4 * (size_t)G);
    g->size = carve(&at, 4 * (size_t)G * G);
    scratch(g, at);
    return 0;
}

static void tiles(Grid *g) {
    g->ny = segments(g->y.i0, g->G, g->y_first, g->y_len);
    g->nx = segments(g->x.i0, g->G, g->x_first, g->x_len);
    for (int sy = 0, t = 0; sy < g->ny; sy++)
        for (int sx = 0; sx < g->nx; sx++, t++) g->size[t] = g->y_len[sy] * g->x_len[sx];
}

/* ---- Maps in parallel: a contiguous range of maps per thread --------------------------------------------------- */

typedef struct Job {
    Grid g;
    int first, last;             /* maps [first, last) */
    const float *maps;
    const int64_t *k;            /* measure */
    const float *limit, *tau_in; /* measure; masks */
    const uint8_t *flags;
    int64_t *wanted, *kept, *positive;
    float *tau, *strength;
    uint8_t *out;                /* masks */
    void *(*work)(void *);       /* measure_maps or mask_maps, on a Job */
} Job;

/* Runs job->work over maps [0, M) on ``threads`` threads (the caller's included): each helper thread gets its own
 * scratch; a helper that cannot start leaves its range to the caller. */
static void run(Job *job, int M, int threads) {
    enum { MOST = 64 };
    threads = threads < 1 ? 1 : threads > MOST ? MOST : threads > M ? (M > 0 ? M : 1) : threads;
    Job jobs[MOST];
    pthread_t ids[MOST];
    int started[MOST] = {0};
    char *own[MOST] = {0};
    for (int t = 0; t < threads; t++) {
        jobs[t] = *job;
        jobs[t].first = (int)((int64_t)M * t / threads), jobs[t].last = (int)((int64_t)M * (t + 1) / threads);
    }
    for (int t = 1; t < threads; t++) {
        own[t] = malloc(scratch_bytes(job->g.G, job->g.h));
        if (!own[t]) continue;
        scratch(&jobs[t].g, own[t]);
        started[t] = pthread_create(&ids[t], NULL, job->work, &jobs[t]) == 0;
    }
    job->work(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t]) {
            pthread_join(ids[t], NULL);
        } else {
            jobs[t].g = job->g; /* the caller's scratch */
            job->work(&jobs[t]);
        }
        free(own[t]);
    }
}

/* ---- Python bindings: contiguous buffers (numpy arrays), checked for size and item size ---------------------- */

static int check(const Py_buffer *b, Py_ssize_t items, Py_ssize_t itemsize, const char *name) {
    if (b->itemsize != itemsize || b->len != items * itemsize) {
        PyErr_Format(PyExc_ValueError, "%s: expected %zd items of %zd bytes, got %zd bytes of items of %zd",
                     name, items, itemsize, b->len, b->itemsize);
        return -1;
    }
    return 0;
}

#define AXIS_BUFFERS 8 /* y: i0, i1, w0, w1; x: the same */

static int axes(Grid *g, Py_buffer *ax, int G) {
    static const char *names[AXIS_BUFFERS] = {"y.i0", "y.i1", "y.w0", "y.w1", "x.i0", "x.i1", "x.w0", "x.w1"};
    for (int i = 0; i < AXIS_BUFFERS; i++)
        if (check(&ax[i], G, i % 4 < 2 ? 8 : 4, names[i])) return -1;
    g->y = (Axis){ax[0].buf, ax[1].buf, ax[2].buf, ax[3].buf};
    g->x = (Axis){ax[4].buf, ax[5].buf, ax[6].buf, ax[7].buf};
    const int n[2] = {g->h, g->w};
    for (int a = 0; a < 2; a++) { /* indices inside the feature grid: a wrong one must not read out of bounds */
        const Axis *axis = a ? &g->x : &g->y;
        for (int j = 0; j < G; j++)
            if (axis->i0[j] < 0 || axis->i0[j] >= n[a] || axis->i1[j] < 0 || axis->i1[j] >= n[a]) {
                PyErr_Format(PyExc_ValueError, "%s axis: feature index out of [0, %d)", a ? "x" : "y", n[a]);
                return -1;
            }
    }
    return 0;
}

/* Thresholds maps [first, last) of a measure Job. */
static void *measure_maps(void *p) {
    Job *j = p;
    Grid *g = &j->g;
    const int64_t N = (int64_t)g->G * g->G;
    for (int i = j->first; i < j->last; i++) {
        if (j->k[i] == 0 && !j->flags[i]) { /* nothing wanted, nothing to count */
            j->wanted[i] = 0, j->tau[i] = INFINITY, j->kept[i] = 0, j->positive[i] = -1, j->strength[i] = 0.0f;
            continue;
        }
        load(g, j->maps + (size_t)i * g->h * g->w);
        int64_t want, n = 0;
        double total = 0.0;
        float t = INFINITY;
        if (j->k[i] >= 0) {
            want = j->k[i] < N ? j->k[i] : N;
            if (want > 0) t = kth_largest(g, want, &n, &total);
        } else { /* absolute: the cells >= limit (just above T x scale) */
            t = j->limit[i];
            at_least(g, t, &want, &total);
            n = want;
        }
        if (want == 0) {
            t = INFINITY, n = 0, total = 0.0;
        } else if (t <= 0.0f) { /* fewer positive cells than wanted: keep every positive one */
            t = FLT_MIN;
            at_least(g, t, &n, &total);
        }
        j->positive[i] = j->flags[i] ? positive_cells(g) : -1;
        j->wanted[i] = want, j->tau[i] = t, j->kept[i] = n;
        j->strength[i] = n > 0 ? (float)(total / (double)n) : 0.0f;
    }
    return NULL;
}

/* Cuts the masks of maps [first, last) of a masks Job: row by row, whole tiles as runs, straddling ones cell by
 * cell. */
static void *mask_maps(void *p) {
    Job *j = p;
    Grid *g = &j->g;
    const int G = g->G;
    for (int i = j->first; i < j->last; i++) {
        load(g, j->maps + (size_t)i * g->h * g->w);
        uint8_t *mask = j->out + (size_t)i * G * G;
        const float ti = j->tau_in[i];
        for (int sy = 0; sy < g->ny; sy++) {
            const float *lo = g->lo + (size_t)sy * g->nx, *hi = g->hi + (size_t)sy * g->nx;
            for (int r = g->y_first[sy]; r < g->y_first[sy] + g->y_len[sy]; r++) {
                uint8_t *row = mask + (size_t)r * G;
                for (int sx = 0; sx < g->nx; sx++) {
                    const int j0 = g->x_first[sx], n = g->x_len[sx];
                    if (lo[sx] >= ti || hi[sx] < ti) {
                        const uint64_t on = lo[sx] >= ti ? 0x0101010101010101u : 0u;
                        if (n == 8) {
                            memcpy(row + j0, &on, 8); /* one store */
                        } else {
                            for (int c = 0; c < n; c++) row[j0 + c] = (uint8_t)on;
                        }
                    } else {
                        cells(g, r, j0, n, g->tile);
                        for (int c = 0; c < n; c++) row[j0 + c] = g->tile[c] >= ti;
                    }
                }
            }
        }
    }
    return NULL;
}

/* The checks and set-up both calls share: the shapes, the maps' buffer, the grid and its scratch, the axes and the
 * tiles. Returns -1 with a Python error set. */
static int prepare(Job *job, const Py_buffer *maps, Py_buffer *ax, int M, int h, int w, int G) {
    if (M < 0 || h < 1 || w < 1 || G < 1 || G > 32768) {
        PyErr_SetString(PyExc_ValueError, "M >= 0, h, w >= 1, 1 <= G <= 32768");
        return -1;
    }
    if (check(maps, (Py_ssize_t)M * h * w, 4, "maps")) return -1;
    if (grid_init(&job->g, G, h, w)) {
        PyErr_NoMemory();
        return -1;
    }
    if (axes(&job->g, ax, G)) return -1;
    tiles(&job->g);
    job->maps = maps->buf;
    return 0;
}

/* Runs the job over M maps on ``threads`` threads without the GIL. */
static PyObject *launch(Job *job, int M, int threads) {
    Py_BEGIN_ALLOW_THREADS
    run(job, M, threads);
    Py_END_ALLOW_THREADS
    return Py_NewRef(Py_None);
}

PyDoc_STRVAR(measure_doc,
"measure(maps, M, h, w, G, y_i0, y_i1, y_w0, y_w1, x_i0, x_i1, x_w0, x_w1, k, limit, count_positive,\n"
"        wanted, tau, kept, positive, strength, threads)\n\n"
"Thresholds M maps (float32 (M, h, w), finite) on the G x G working grid. k (int64 (M,)): cells wanted, or -1\n"
"where limit (float32 (M,)) is the absolute threshold; count_positive (uint8 (M,)). Writes wanted, kept,\n"
"positive (int64 (M,); positive -1 where not asked), tau and strength (float32 (M,)). The maps are shared among\n"
"``threads`` threads, the caller's included.");

static PyObject *measure(PyObject *self, PyObject *args) {
    Py_buffer maps, ax[AXIS_BUFFERS], k, limit, flags, wanted, tau, kept, positive, strength;
    int M, h, w, G, threads;
    if (!PyArg_ParseTuple(args, "y*iiiiy*y*y*y*y*y*y*y*y*y*y*w*w*w*w*w*i", &maps, &M, &h, &w, &G, &ax[0], &ax[1],
                          &ax[2], &ax[3], &ax[4], &ax[5], &ax[6], &ax[7], &k, &limit, &flags, &wanted, &tau, &kept,
                          &positive, &strength, &threads))
        return NULL;
    Py_buffer *all[] = {&maps, &ax[0], &ax[1], &ax[2], &ax[3], &ax[4], &ax[5], &ax[6], &ax[7], &k, &limit,
                        &flags, &wanted, &tau, &kept, &positive, &strength};
    const int n_all = sizeof(all) / sizeof(all[0]);
    PyObject *result = NULL;
    Job job = {0};
    if (check(&k, M, 8, "k") || check(&limit, M, 4, "limit") || check(&flags, M, 1, "count_positive")
        || check(&wanted, M, 8, "wanted") || check(&tau, M, 4, "tau") || check(&kept, M, 8, "kept")
        || check(&positive, M, 8, "positive") || check(&strength, M, 4, "strength")
        || prepare(&job, &maps, ax, M, h, w, G))
        goto done;
    job.k = k.buf, job.limit = limit.buf, job.flags = flags.buf, job.wanted = wanted.buf, job.tau = tau.buf;
    job.kept = kept.buf, job.positive = positive.buf, job.strength = strength.buf, job.work = measure_maps;
    result = launch(&job, M, threads);
done:
    for (int i = 0; i < n_all; i++) PyBuffer_Release(all[i]);
    return result;
}

PyDoc_STRVAR(masks_doc,
"masks(maps, M, h, w, G, y_i0, y_i1, y_w0, y_w1, x_i0, x_i1, x_w0, x_w1, tau, out, threads)\n\n"
"out (1-byte items (M, G, G)) = each working-grid cell's value >= tau (float32 (M,)), on ``threads`` threads.");

static PyObject *masks(PyObject *self, PyObject *args) {
    Py_buffer maps, ax[AXIS_BUFFERS], tau, out;
    int M, h, w, G, threads;
    if (!PyArg_ParseTuple(args, "y*iiiiy*y*y*y*y*y*y*y*y*w*i", &maps, &M, &h, &w, &G, &ax[0], &ax[1], &ax[2],
                          &ax[3], &ax[4], &ax[5], &ax[6], &ax[7], &tau, &out, &threads))
        return NULL;
    Py_buffer *all[] = {&maps, &ax[0], &ax[1], &ax[2], &ax[3], &ax[4], &ax[5], &ax[6], &ax[7], &tau, &out};
    const int n_all = sizeof(all) / sizeof(all[0]);
    PyObject *result = NULL;
    Job job = {0};
    if (check(&tau, M, 4, "tau") || check(&out, (Py_ssize_t)M * (G > 0 ? G : 0) * (G > 0 ? G : 0), 1, "out")
        || prepare(&job, &maps, ax, M, h, w, G))
        goto done;
    job.tau_in = tau.buf, job.out = out.buf, job.work = mask_maps;
    result = launch(&job, M, threads);
done:
    for (int i = 0; i < n_all; i++) PyBuffer_Release(all[i]);
    return result;
}

static PyMethodDef methods[] = {
    {"measure", measure, METH_VARARGS, measure_doc},
    {"masks", masks, METH_VARARGS, masks_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "galore._regions",
                                    "The regions stage on the CPU, compiled (see galore/regions.py).", -1, methods};

PyMODINIT_FUNC PyInit__regions(void) { return PyModule_Create(&module); }
