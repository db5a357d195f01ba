// herd's own GPU kernels, compiled at run time by NVRTC (engine/src/cuda/mod.rs) once per
// model shape: the engine prepends `#define HEAD_DIM`, `#define GROUP` (query heads per
// key/value head). No headers: bf16 values travel as 16-bit integers and are widened by
// shifting, so NVRTC needs no include path.
//
// The paged key/value cache of one layer is `[blocks, 2, kv_heads, block_size, HEAD_DIM]`:
// block b holds K (plane 0) and V (plane 1) of `block_size` consecutive positions of one
// sequence; a sequence's block table maps position p to block table[p / block_size].

typedef unsigned short bf16_t;
typedef unsigned int u32;

#define NEG_INF __int_as_float(0xff800000)
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }

__device__ __forceinline__ float bf16_to_f32(bf16_t x) { return __uint_as_float(((u32)x) << 16); }

__device__ __forceinline__ bf16_t f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (bf16_t)0x7fc0;  // NaN stays NaN
    u += 0x7fffu + ((u >> 16) & 1u);                            // round to nearest even
    return (bf16_t)(u >> 16);
}

// Eight bf16 (16 bytes, little-endian) to floats.
__device__ __forceinline__ void unpack8(uint4 raw, float* out) {
    const u32 w[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        out[2 * i] = __uint_as_float(w[i] << 16);
        out[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
    }
}

// ---------------------------------------------------------------------------------------
// Rotary embedding of a packed batch, "half" layout (pairs i and i + head_dim/2).
// qkv: [tokens, (heads + 2 kv_heads) * head_dim] → out of the same shape: query heads
// rotated and multiplied by q_scale (1/sqrt(head_dim)), key heads rotated, values copied.
// One block per token; angles position * inv_freq[i] in f32, as Hugging Face computes them.
extern "C" __global__ void herd_rope_qkv(const bf16_t* __restrict__ qkv, const u32* __restrict__ positions,
                                         const float* __restrict__ inv_freq, bf16_t* __restrict__ out, int heads,
                                         int kv_heads, int head_dim, float q_scale) {
    extern __shared__ float cos_sin[];  // [2][head_dim / 2]
    const int t = blockIdx.x;
    const int half = head_dim / 2;
    const float pos = (float)positions[t];
    for (int j = threadIdx.x; j < half; j += blockDim.x) {
        float s, c;
        sincosf(pos * inv_freq[j], &s, &c);
        cos_sin[j] = c;
        cos_sin[half + j] = s;
    }
    __syncthreads();
    const int rope_heads = heads + kv_heads;
    const size_t row = (size_t)t * (heads + 2 * kv_heads) * head_dim;
    for (int i = threadIdx.x; i < rope_heads * half; i += blockDim.x) {
        const int h = i / half, j = i - h * half;
        const float c = cos_sin[j], s = cos_sin[half + j];
        const float scale = h < heads ? q_scale : 1.0f;
        const size_t base = row + (size_t)h * head_dim;
        const float x1 = bf16_to_f32(qkv[base + j]), x2 = bf16_to_f32(qkv[base + j + half]);
        out[base + j] = f32_to_bf16((x1 * c - x2 * s) * scale);
        out[base + j + half] = f32_to_bf16((x1 * s + x2 * c) * scale);
    }
    const size_t v_base = row + (size_t)rope_heads * head_dim;
    for (int i = threadIdx.x; i < kv_heads * head_dim; i += blockDim.x) out[v_base + i] = qkv[v_base + i];
}

// ---------------------------------------------------------------------------------------
// Writes the rotated keys and the values of every token into its cache slot
// (slot = block * block_size + offset). One block per token.
extern "C" __global__ void herd_store_kv(const bf16_t* __restrict__ qkv_rot, const u32* __restrict__ slots,
                                         bf16_t* __restrict__ cache, int heads, int kv_heads, int head_dim,
                                         int block_size) {
    const int t = blockIdx.x;
    const u32 slot = slots[t];
    const u32 block = slot / block_size, offset = slot - block * block_size;
    const bf16_t* k = qkv_rot + ((size_t)t * (heads + 2 * kv_heads) + heads) * head_dim;
    const bf16_t* v = k + (size_t)kv_heads * head_dim;
    const size_t plane = (size_t)kv_heads * block_size * head_dim;
    bf16_t* k_dst = cache + (size_t)block * 2 * plane + (size_t)offset * head_dim;
    bf16_t* v_dst = k_dst + plane;
    for (int i = threadIdx.x; i < kv_heads * head_dim; i += blockDim.x) {
        const int g = i / head_dim, d = i - g * head_dim;
        const size_t dst = (size_t)g * block_size * head_dim + d;
        k_dst[dst] = k[i];
        v_dst[dst] = v[i];
    }
}

// ---------------------------------------------------------------------------------------
// Decode attention over the paged cache: one new query token per row, all GROUP query heads
// of a key/value head in one thread block, so each key and value is read once for the group.
// Grid (kv_heads, rows, partitions); a partition covers partition_size positions. Inside a
// block, LANES lanes share a position (8 dimensions each, one 16-byte load of K and of V),
// and each group of lanes keeps an online softmax; the groups are merged through shared
// memory at the end. With one partition the block writes the bf16 output; with several it
// writes its normalised partial output and (max, sum) for herd_decode_combine.
// q rows: the first rows of qkv_rot (decode tokens lead a packed batch), q pre-scaled.
// meta row: [context length, block ids...].
#define LANES (HEAD_DIM / 8)
#define POS_PER_WARP (32 / LANES)
#define WARPS 4
#define POS_GROUPS (WARPS * POS_PER_WARP)

extern "C" __global__ void __launch_bounds__(WARPS * 32)
    herd_decode_attention(const bf16_t* __restrict__ qkv_rot, int q_row_stride, const bf16_t* __restrict__ cache,
                          const u32* __restrict__ meta, int meta_stride, int kv_heads, int block_size,
                          int partition_size, bf16_t* __restrict__ out, float* __restrict__ part_out,
                          float* __restrict__ part_ml) {
    const int kv_head = blockIdx.x, row = blockIdx.y, part = blockIdx.z, parts = gridDim.z;
    const int len = (int)meta[(size_t)row * meta_stride];
    const int begin = part * partition_size;
    if (begin >= len) return;  // the combine kernel only reads partitions inside the length
    const int end = imin(len, begin + partition_size);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int sub = lane / LANES, l = lane % LANES;
    const int group = warp * POS_PER_WARP + sub;

    float q[GROUP][8];
    const bf16_t* q_base = qkv_rot + (size_t)row * q_row_stride + (size_t)kv_head * GROUP * HEAD_DIM + l * 8;
#pragma unroll
    for (int g = 0; g < GROUP; ++g) unpack8(*(const uint4*)(q_base + g * HEAD_DIM), q[g]);

    float m[GROUP], s[GROUP], acc[GROUP][8];
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
        m[g] = NEG_INF;
        s[g] = 0.f;
#pragma unroll
        for (int i = 0; i < 8; ++i) acc[g][i] = 0.f;
    }

    const u32* table = meta + (size_t)row * meta_stride + 1;
    const size_t plane = (size_t)kv_heads * block_size * HEAD_DIM;
    // Lanes past the end load the last position and drop its contribution, so every lane
    // of a warp runs the same iterations (the shuffles need the whole warp).
    auto k_address = [&](int p) -> const bf16_t* {
        p = imin(p, end - 1);
        const int b = p / block_size;
        return cache + (size_t)table[b] * 2 * plane + ((size_t)kv_head * block_size + (p - b * block_size)) * HEAD_DIM +
               l * 8;
    };
    int base = begin + warp * POS_PER_WARP;
    uint4 k_raw, v_raw;
    k_raw.x = k_raw.y = k_raw.z = k_raw.w = 0u;
    v_raw = k_raw;
    if (base < end) {
        const bf16_t* k_ptr = k_address(base + sub);
        k_raw = __ldg((const uint4*)k_ptr);
        v_raw = __ldg((const uint4*)(k_ptr + plane));
    }
    for (; base < end; base += POS_GROUPS) {
        const bool valid = base + sub < end;
        float k[8], v[8];
        unpack8(k_raw, k);
        unpack8(v_raw, v);
        const int next = base + POS_GROUPS;
        if (next < end) {  // the next position's loads go out before this one's arithmetic
            const bf16_t* k_ptr = k_address(next + sub);
            k_raw = __ldg((const uint4*)k_ptr);
            v_raw = __ldg((const uint4*)(k_ptr + plane));
        }
#pragma unroll
        for (int g = 0; g < GROUP; ++g) {
            float dot = 0.f;
#pragma unroll
            for (int i = 0; i < 8; ++i) dot = fmaf(q[g][i], k[i], dot);
#pragma unroll
            for (int o = LANES / 2; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
            if (valid) {
                const float m_new = fmaxf(m[g], dot);
                const float correction = __expf(m[g] - m_new);
                const float w = __expf(dot - m_new);
                s[g] = s[g] * correction + w;
#pragma unroll
                for (int i = 0; i < 8; ++i) acc[g][i] = fmaf(acc[g][i], correction, w * v[i]);
                m[g] = m_new;
            }
        }
    }

    __shared__ float sm_m[POS_GROUPS][GROUP], sm_s[POS_GROUPS][GROUP];
    __shared__ float sm_acc[POS_GROUPS][GROUP][HEAD_DIM];
#pragma unroll
    for (int g = 0; g < GROUP; ++g) {
        if (l == 0) {
            sm_m[group][g] = m[g];
            sm_s[group][g] = s[g];
        }
#pragma unroll
        for (int i = 0; i < 8; ++i) sm_acc[group][g][l * 8 + i] = acc[g][i];
    }
    __syncthreads();
    const int heads = kv_heads * GROUP;
    for (int idx = threadIdx.x; idx < GROUP * HEAD_DIM; idx += WARPS * 32) {
        const int g = idx / HEAD_DIM, d = idx - g * HEAD_DIM;
        float mx = NEG_INF;
#pragma unroll
        for (int j = 0; j < POS_GROUPS; ++j) mx = fmaxf(mx, sm_m[j][g]);
        float sum = 0.f, a = 0.f;
#pragma unroll
        for (int j = 0; j < POS_GROUPS; ++j) {
            const float w = __expf(sm_m[j][g] - mx);  // 0 for groups that saw no position
            sum += sm_s[j][g] * w;
            a += sm_acc[j][g][d] * w;
        }
        const size_t head = (size_t)row * heads + (size_t)kv_head * GROUP + g;
        if (parts == 1) {
            out[head * HEAD_DIM + d] = f32_to_bf16(a / sum);
        } else {
            const size_t slot = head * parts + part;
            part_out[slot * HEAD_DIM + d] = a / sum;
            if (d == 0) {
                part_ml[slot * 2] = mx;
                part_ml[slot * 2 + 1] = sum;
            }
        }
    }
}

// Merges the partitions of herd_decode_attention. Grid (heads, rows), HEAD_DIM threads.
extern "C" __global__ void herd_decode_combine(const float* __restrict__ part_out, const float* __restrict__ part_ml,
                                               const u32* __restrict__ meta, int meta_stride, int heads, int parts,
                                               int partition_size, bf16_t* __restrict__ out) {
    const int head = blockIdx.x, row = blockIdx.y, d = threadIdx.x;
    const int len = (int)meta[(size_t)row * meta_stride];
    const int used = imin(parts, (len + partition_size - 1) / partition_size);
    const size_t slot0 = ((size_t)row * heads + head) * parts;
    float mx = NEG_INF;
    for (int p = 0; p < used; ++p) mx = fmaxf(mx, part_ml[(slot0 + p) * 2]);
    float sum = 0.f, a = 0.f;
    for (int p = 0; p < used; ++p) {
        const float w = __expf(part_ml[(slot0 + p) * 2] - mx) * part_ml[(slot0 + p) * 2 + 1];
        sum += w;
        a += w * part_out[(slot0 + p) * HEAD_DIM + d];
    }
    out[((size_t)row * heads + head) * HEAD_DIM + d] = f32_to_bf16(a / sum);
}

// ---------------------------------------------------------------------------------------
// One sequence's cached keys and values, contiguous: out [2, kv_heads, len, head_dim].
// Grid (x, kv_heads, 2); 16-byte copies.
extern "C" __global__ void herd_gather_kv(const bf16_t* __restrict__ cache, const u32* __restrict__ table, int len,
                                          int kv_heads, int head_dim, int block_size, bf16_t* __restrict__ out) {
    const int g = blockIdx.y, kv = blockIdx.z;
    const int chunks = head_dim / 8;
    const size_t plane = (size_t)kv_heads * block_size * head_dim;
    const size_t total = (size_t)len * chunks;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int p = (int)(i / chunks), c = (int)(i - (size_t)p * chunks);
        const int b = p / block_size;
        const uint4* src = (const uint4*)(cache + (size_t)table[b] * 2 * plane + kv * plane +
                                          ((size_t)g * block_size + (p - b * block_size)) * head_dim) +
                           c;
        uint4* dst = (uint4*)(out + (((size_t)kv * kv_heads + g) * len + p) * head_dim) + c;
        *dst = *src;
    }
}

// ---------------------------------------------------------------------------------------
// Block-wide reductions (blockDim.x a multiple of 32, at most 1024). Every warp reduces the
// warps' partials itself, so every thread gets the result.
__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
    return x;
}
__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
    return x;
}
__device__ float block_max(float x, float* scratch) {
    x = warp_max(x);
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
    __syncthreads();
    const int lane = threadIdx.x % 32;
    x = lane < blockDim.x / 32 ? scratch[lane] : NEG_INF;
    x = warp_max(x);
    __syncthreads();
    return x;
}
__device__ float block_sum(float x, float* scratch) {
    x = warp_sum(x);
    if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = x;
    __syncthreads();
    const int lane = threadIdx.x % 32;
    x = lane < blockDim.x / 32 ? scratch[lane] : 0.f;
    x = warp_sum(x);
    __syncthreads();
    return x;
}

// Softmax of prefill attention scores with the causal mask implied: scores [rows, len],
// rows cycling through `queries` queries at positions len - queries ..; row r sees keys
// 0 ..= len - queries + r % queries. One block per row; f32 inside.
extern "C" __global__ void herd_causal_softmax(const bf16_t* __restrict__ scores, bf16_t* __restrict__ out, int len,
                                               int queries) {
    __shared__ float scratch[32];
    const size_t r = blockIdx.x;
    const int limit = len - queries + (int)(r % queries) + 1;
    const bf16_t* x = scores + r * len;
    bf16_t* y = out + r * len;
    float mx = NEG_INF;
    for (int j = threadIdx.x; j < limit; j += blockDim.x) mx = fmaxf(mx, bf16_to_f32(x[j]));
    mx = block_max(mx, scratch);
    float sum = 0.f;
    for (int j = threadIdx.x; j < limit; j += blockDim.x) sum += __expf(bf16_to_f32(x[j]) - mx);
    sum = block_sum(sum, scratch);
    const float inv = 1.f / sum;
    for (int j = threadIdx.x; j < len; j += blockDim.x)
        y[j] = j < limit ? f32_to_bf16(__expf(bf16_to_f32(x[j]) - mx) * inv) : (bf16_t)0;
}

// ---------------------------------------------------------------------------------------
// SwiGLU: gate_up [tokens, 2 * intermediate] → silu(gate) * up, [tokens, intermediate].
extern "C" __global__ void herd_swiglu(const bf16_t* __restrict__ gate_up, bf16_t* __restrict__ out,
                                       int intermediate, size_t total) {
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const size_t t = i / intermediate;
        const size_t j = i - t * intermediate;
        const float g = bf16_to_f32(gate_up[t * 2 * intermediate + j]);
        const float u = bf16_to_f32(gate_up[t * 2 * intermediate + intermediate + j]);
        out[i] = f32_to_bf16(g / (1.f + __expf(-g)) * u);
    }
}

// ---------------------------------------------------------------------------------------
// Causal prefill attention of one prompt chunk, flash-attention style: the scores never
// leave the chip. q: `t` rows (row stride q_row_stride elements) of `heads` pre-scaled query
// heads; k, v: [kv_heads, len, HEAD_DIM] contiguous, the chunk's own keys last, so query i
// sits at position len - t + i and sees keys 0 ..= len - t + i. out: [t, heads * HEAD_DIM].
// Grid (ceil(t / 64), heads), 4 warps; each warp owns 16 query rows and runs the bf16 tensor
// core instruction mma.m16n8k16 (f32 accumulate) for Q·Kᵀ and P·V over 64-key tiles held in
// shared memory, with an online softmax in between.
#define FA_ROWS 64
#define FA_KEYS 64
#define FA_STRIDE (HEAD_DIM + 8)  // padded smem rows: the fragment loads hit 32 distinct banks
#define FA_DK (HEAD_DIM / 16)     // k-steps of Q·Kᵀ over the head dimension
#define FA_DN (HEAD_DIM / 8)      // n-tiles of P·V over the head dimension

__device__ __forceinline__ void mma_bf16_16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Two floats as a bf16 pair, the first in the low half (the lower column of a fragment).
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
    return (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16);
}

extern "C" __global__ void __launch_bounds__(128)
    herd_prefill_attention(const bf16_t* __restrict__ q, long long q_row_stride, const bf16_t* __restrict__ k,
                           const bf16_t* __restrict__ v, int t, int len, int heads, bf16_t* __restrict__ out) {
    __shared__ __align__(16) bf16_t ks[FA_KEYS * FA_STRIDE];
    __shared__ __align__(16) bf16_t vs[FA_KEYS * FA_STRIDE];
    const int tile = blockIdx.x, head = blockIdx.y, kv_head = head / GROUP;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int g = lane / 4, tq = lane % 4;  // fragment row group and column pair
    const int row0 = tile * FA_ROWS + warp * 16;
    const int first_pos = len - t;

    // This lane's query fragments (rows row0 + g and row0 + g + 8; rows past t are clamped
    // and their results dropped).
    u32 qf[FA_DK][4];
    {
        const bf16_t* qa = q + (size_t)imin(row0 + g, t - 1) * q_row_stride + (size_t)head * HEAD_DIM + 2 * tq;
        const bf16_t* qb = q + (size_t)imin(row0 + g + 8, t - 1) * q_row_stride + (size_t)head * HEAD_DIM + 2 * tq;
#pragma unroll
        for (int s = 0; s < FA_DK; ++s) {
            qf[s][0] = *(const u32*)(qa + 16 * s);
            qf[s][1] = *(const u32*)(qb + 16 * s);
            qf[s][2] = *(const u32*)(qa + 16 * s + 8);
            qf[s][3] = *(const u32*)(qb + 16 * s + 8);
        }
    }
    float o[FA_DN][4];
#pragma unroll
    for (int j = 0; j < FA_DN; ++j) o[j][0] = o[j][1] = o[j][2] = o[j][3] = 0.f;
    float m[2] = {NEG_INF, NEG_INF}, l[2] = {0.f, 0.f};  // l: this lane's columns only
    const float LOG2E = 1.4426950408889634f;
    const int pos_a = first_pos + row0 + g, pos_b = pos_a + 8;
    const int key_end = imin(len, first_pos + tile * FA_ROWS + FA_ROWS);  // keys any row here sees
    const bf16_t* kh = k + (size_t)kv_head * len * HEAD_DIM;
    const bf16_t* vh = v + (size_t)kv_head * len * HEAD_DIM;

    for (int k0 = 0; k0 < key_end; k0 += FA_KEYS) {
        __syncthreads();  // the previous tile is no longer read
        for (int c = threadIdx.x; c < FA_KEYS * HEAD_DIM / 8; c += blockDim.x) {
            const int r = c / (HEAD_DIM / 8), col = (c % (HEAD_DIM / 8)) * 8;
            uint4 kk, vv;  // zeros past the end: 0 · garbage could be NaN
            kk.x = kk.y = kk.z = kk.w = 0u;
            vv = kk;
            if (k0 + r < len) {
                kk = __ldg((const uint4*)(kh + (size_t)(k0 + r) * HEAD_DIM + col));
                vv = __ldg((const uint4*)(vh + (size_t)(k0 + r) * HEAD_DIM + col));
            }
            *(uint4*)(ks + r * FA_STRIDE + col) = kk;
            *(uint4*)(vs + r * FA_STRIDE + col) = vv;
        }
        __syncthreads();

        // Scores of 16 rows x 64 keys.
        float sc[FA_KEYS / 8][4];
#pragma unroll
        for (int j = 0; j < FA_KEYS / 8; ++j) {
            sc[j][0] = sc[j][1] = sc[j][2] = sc[j][3] = 0.f;
            const bf16_t* kr = ks + (8 * j + g) * FA_STRIDE + 2 * tq;
#pragma unroll
            for (int s = 0; s < FA_DK; ++s) {
                mma_bf16_16816(sc[j], qf[s][0], qf[s][1], qf[s][2], qf[s][3], *(const u32*)(kr + 16 * s),
                               *(const u32*)(kr + 16 * s + 8));
            }
        }
        // Causal mask, log2 units, row maxima over the quad of lanes sharing a row.
        float mx[2] = {NEG_INF, NEG_INF};
#pragma unroll
        for (int j = 0; j < FA_KEYS / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = k0 + 8 * j + 2 * tq + (e & 1);
                const int pos = e < 2 ? pos_a : pos_b;
                const float x = key <= pos && key < len ? sc[j][e] * LOG2E : NEG_INF;
                sc[j][e] = x;
                mx[e >> 1] = fmaxf(mx[e >> 1], x);
            }
        }
        float base[2];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 1));
            mx[r] = fmaxf(mx[r], __shfl_xor_sync(0xffffffffu, mx[r], 2));
            const float m_new = fmaxf(m[r], mx[r]);
            base[r] = m_new == NEG_INF ? 0.f : m_new;  // a row with no key yet stays at zero
            const float correction = exp2f(m[r] - base[r]);
            l[r] *= correction;
#pragma unroll
            for (int j = 0; j < FA_DN; ++j) {
                o[j][2 * r] *= correction;
                o[j][2 * r + 1] *= correction;
            }
            m[r] = m_new;
        }
#pragma unroll
        for (int j = 0; j < FA_KEYS / 8; ++j) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float p = exp2f(sc[j][e] - base[e >> 1]);
                sc[j][e] = p;
                l[e >> 1] += p;
            }
        }
        // O += P·V: the score accumulators of two adjacent key n-tiles are the A fragment
        // of one 16-key k-step.
#pragma unroll
        for (int s = 0; s < FA_KEYS / 16; ++s) {
            const u32 a0 = pack_bf16x2(sc[2 * s][0], sc[2 * s][1]);
            const u32 a1 = pack_bf16x2(sc[2 * s][2], sc[2 * s][3]);
            const u32 a2 = pack_bf16x2(sc[2 * s + 1][0], sc[2 * s + 1][1]);
            const u32 a3 = pack_bf16x2(sc[2 * s + 1][2], sc[2 * s + 1][3]);
            const bf16_t* vr = vs + (16 * s + 2 * tq) * FA_STRIDE + g;
#pragma unroll
            for (int j = 0; j < FA_DN; ++j) {
                const bf16_t* vc = vr + 8 * j;
                const u32 b0 = (u32)vc[0] | ((u32)vc[FA_STRIDE] << 16);
                const u32 b1 = (u32)vc[8 * FA_STRIDE] | ((u32)vc[9 * FA_STRIDE] << 16);
                mma_bf16_16816(o[j], a0, a1, a2, a3, b0, b1);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 1);
        l[r] += __shfl_xor_sync(0xffffffffu, l[r], 2);
    }
    const size_t out_stride = (size_t)heads * HEAD_DIM;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
        const int row = row0 + g + 8 * r;
        if (row >= t) continue;
        const float inv = 1.f / l[r];
        bf16_t* dst = out + (size_t)row * out_stride + (size_t)head * HEAD_DIM + 2 * tq;
#pragma unroll
        for (int j = 0; j < FA_DN; ++j) *(u32*)(dst + 8 * j) = pack_bf16x2(o[j][2 * r] * inv, o[j][2 * r + 1] * inv);
    }
}
