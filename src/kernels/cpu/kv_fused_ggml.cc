// SPDX-License-Identifier: MIT
// Fused attention kernels for ggml blocks (q4_0, q8_0): keys scored against the query rounded
// to q8_0 as llama.cpp scores them,
//   q . x' = sum_blocks d_qb d_b (q8_b . codes_b)  (q8: the query in q8_0),
// the block sums in integers; values accumulated out += (p d) code for several queries at a
// time. Specification: ref::decode_run_ref, then dot (with the rounded query) / axpy.
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL  // this file and kv_fused_codebook_values.cc: VNNI's byte dot products (BlockDot)
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/cpu/kv_fused_ggml.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
#include "hwy/highway.h"
#include "kernels/cpu/kv_fused-inl.h"
#include "kernels/cpu/kv_fused_parts.h"
#include "quant/ggml_blocks.h"
#ifndef KVQ_KERNELS_KV_FUSED_GGML_ONCE
#define KVQ_KERNELS_KV_FUSED_GGML_ONCE
#include <algorithm>
#include <cstring>
#include <utility>
#endif

HWY_BEFORE_NAMESPACE();
namespace kvq {
namespace HWY_NAMESPACE {

// q4_0 / q8_0: (nibble - 8) or int8 codes j, j + 1, ... of one 32-value block, as int32 lanes
// of di.
template <bool kQ4, class D>
HWY_INLINE hn::Vec<D> BlockCodesI(D di, const uint8_t* HWY_RESTRICT blk, size_t j) {
  if constexpr (kQ4) {
    const auto* qs = reinterpret_cast<const BlockQ4_0*>(blk)->qs;
    const auto b = hn::PromoteTo(di, hn::LoadU(hn::Rebind<uint8_t, D>(), qs + (j & 15)));
    const auto nib = j < 16 ? hn::And(b, hn::Set(di, 15)) : hn::ShiftRight<4>(b);
    return hn::Sub(nib, hn::Set(di, 8));
  } else {
    return hn::PromoteTo(di, hn::LoadU(hn::Rebind<int8_t, D>(), reinterpret_cast<const BlockQ8_0*>(blk)->qs + j));
  }
}

// The same codes as N-lane float vectors.
template <bool kQ4>
HWY_INLINE hn::Vec<DF> BlockCodes(const uint8_t* HWY_RESTRICT blk, size_t j) {
  return hn::ConvertTo(DF(), BlockCodesI<kQ4>(DI(), blk, j));
}

// q4_0 / q8_0 keys against queries rounded to q8_0 blocks, as llama.cpp scores them (q8_0 is
// ggml's vec_dot_type for both): q . x' = sum_b d_qb d_kb sum_j q_bj c_bj, the inner sums in
// integers (exact), c = nibble - 8 or the int8 code. Lanes of int32 partial sums of a block,
// converted to float, times d_qb, times d_kb into the query's row sum. On AVX2 a block is one
// pmaddubsw + pmaddwd per query (unsigned nibbles times the signed query; the -8 as
// 8 * sum(q) per lane, once per query block); elsewhere the same sums, widened to int32.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX2
// Block b of a query: its 32 int8 values, and per int32 lane the offset its key format's codes
// carry, from the sum of each 4 query values: for q4_0 keys (nibble - 8) 8 times that sum, to
// subtract; on AVX3_DL, where the sums start from it (BlockDot), minus 8 (q4_0) or minus 128
// (q8_0 codes taken as c + 128) times it. Once per query block, not per key row.
struct QueryBlockI8 {
  __m256i q, offset;
};
template <bool kQ4>
HWY_INLINE QueryBlockI8 LoadQueryBlock(const BlockQ8_0& b) {
  const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b.qs));
  const __m256i off8 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(8), q), _mm256_set1_epi16(1));
#if HWY_TARGET == HWY_AVX3_DL
  return {q, _mm256_sub_epi32(_mm256_setzero_si256(), kQ4 ? off8 : _mm256_slli_epi32(off8, 4))};
#else
  return {q, off8};
#endif
}
// The block's 32 codes as bytes in value order: nibbles 0..15 (q4_0: the low nibbles, then
// the high ones), or the int8 codes (on AVX3_DL as c + 128, unsigned for vpdpbusd: BlockDot).
template <bool kQ4>
HWY_INLINE __m256i KeyBlockBytes(const uint8_t* HWY_RESTRICT blk) {
  if constexpr (kQ4) {  // the 16 bytes in both halves, the upper half shifted down a nibble
    const __m256i b = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(reinterpret_cast<const BlockQ4_0*>(blk)->qs)));
    return _mm256_and_si256(_mm256_srlv_epi64(b, _mm256_set_epi64x(4, 4, 0, 0)), _mm256_set1_epi8(15));
  } else {
    const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(reinterpret_cast<const BlockQ8_0*>(blk)->qs));
#if HWY_TARGET == HWY_AVX3_DL
    return _mm256_xor_si256(c, _mm256_set1_epi8(char(0x80)));
#else
    return c;
#endif
  }
}
// The block's scale d in every lane (a word broadcast and one conversion).
HWY_INLINE hn::Vec<DF8> BlockScale(const uint8_t* HWY_RESTRICT blk) {
  int16_t d;
  std::memcpy(&d, blk, 2);
  return hn::Vec<DF8>{_mm256_cvtph_ps(_mm_set1_epi16(d))};
}
// Lane k: sum_{j in [4k, 4k + 4)} c_j q_j, as float (exact: |sum| < 2^24).
template <bool kQ4>
HWY_INLINE hn::Vec<DF8> BlockDot(__m256i codes, const QueryBlockI8& qb) {
#if HWY_TARGET == HWY_AVX3_DL
  // VNNI (DotBytesAdd) from the block's negated offset, the codes unsigned (q4_0's nibbles,
  // q8_0's c + 128): the same lanes as the pmaddubsw path, so the same scores.
  __m256i p = qb.offset;
  DotBytesAdd(&p, codes, qb.q);
#else
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i p;
  if constexpr (kQ4) {
    p = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(codes, qb.q), ones), qb.offset);
  } else {  // |c| times q with c's sign: pmaddubsw takes its first operand unsigned
    p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(codes, codes), _mm256_sign_epi8(qb.q, codes)), ones);
  }
#endif
  return hn::Vec<DF8>{_mm256_cvtepi32_ps(p)};
}
#else
struct QueryBlockI8 {
  const int8_t* q;
};
template <bool kQ4>
HWY_INLINE QueryBlockI8 LoadQueryBlock(const BlockQ8_0& b) { return {b.qs}; }
template <bool kQ4>
HWY_INLINE const uint8_t* KeyBlockBytes(const uint8_t* HWY_RESTRICT blk) { return blk; }
HWY_INLINE hn::Vec<DF8> BlockScale(const uint8_t* HWY_RESTRICT blk) { return hn::Set(DF8(), F16ToF32(blk)); }
// Lane k of N: sum_{j = k mod N} c_j q_j, as float.
template <bool kQ4>
HWY_INLINE hn::Vec<DF8> BlockDot(const uint8_t* HWY_RESTRICT blk, const QueryBlockI8& qb) {
  const hn::RebindToSigned<DF8> di;
  const size_t N = hn::Lanes(di);
  auto acc = hn::Zero(di);
  for (size_t j = 0; j < 32; j += N) {
    const auto q = hn::PromoteTo(di, hn::LoadU(hn::Rebind<int8_t, decltype(di)>(), qb.q + j));
    acc = hn::Add(acc, hn::Mul(BlockCodesI<kQ4>(di, blk, j), q));
  }
  return hn::ConvertTo(DF8(), acc);
}
#endif

// A row's blocks are read once for up to kScoreQ queries (a GQA group); with one query, rows go
// four at a time, independent chains whose four sums reduce in one transpose (StoreScores with
// the rows as its sums). Each (query, row) sum is the same operations in every case, so results
// do not depend on how many queries share a pass. kNb: blocks per row when a constant (the
// common head sizes, whose loops then unroll), else 0 and nb.
template <bool kQ4, size_t kNb>
void GgmlScoresQ8(const KvRun& r, const BlockQ8_0* HWY_RESTRICT q8, int n_q, float scale, float* HWY_RESTRICT s,
                  size_t lds) {
  const DF8 df;
  const size_t nb = kNb != 0 ? kNb : size_t(r.head_dim) / 32;
  const size_t blk = kQ4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  ForQueryPasses<kScoreQ>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    QueryBlockI8 qb[kQ][16];  // head_dim <= 512
    hn::Vec<DF8> dq[kQ][16];
    for (int i = 0; i < kQ; ++i) {
      for (size_t b = 0; b < nb; ++b) {
        const BlockQ8_0& x = q8[size_t(i0 + i) * nb + b];
        qb[i][b] = LoadQueryBlock<kQ4>(x);
        dq[i][b] = BlockScale(reinterpret_cast<const uint8_t*>(&x));
      }
    }
    auto rows = [&](auto kr_, int t0) {
      constexpr int kRows = decltype(kr_)::value;
      hn::Vec<DF8> acc[kQ][kRows];
      for (auto& a : acc) {
        for (auto& x : a) x = hn::Zero(df);
      }
      const uint8_t* row0 = r.rows + size_t(t0) * r.stride;
      prefetch_rows_ahead(row0, kRows * r.stride);
      for (size_t b = 0; b < nb; ++b) {
        for (int w = 0; w < kRows; ++w) {
          const uint8_t* kb = row0 + size_t(w) * r.stride + b * blk;
          const auto dk = BlockScale(kb);
          const auto codes = KeyBlockBytes<kQ4>(kb);
          for (int i = 0; i < kQ; ++i) {
            acc[i][w] = hn::MulAdd(hn::Mul(BlockDot<kQ4>(codes, qb[i][b]), dq[i][b]), dk, acc[i][w]);
          }
        }
      }
      if constexpr (kQ == 1) {
        StoreScores<kRows>(acc[0], nullptr, scale, s + size_t(i0) * lds + size_t(t0), 1);
      } else {
        static_assert(kRows == 1);
        hn::Vec<DF8> sums[kQ];
        for (int i = 0; i < kQ; ++i) sums[i] = acc[i][0];
        StoreScores<kQ>(sums, nullptr, scale, s + size_t(i0) * lds + size_t(t0), lds);
      }
    };
    int t = 0;
    if constexpr (kQ == 1) {
      for (; t + 4 <= r.n; t += 4) rows(std::integral_constant<int, 4>(), t);
    }
    for (; t < r.n; ++t) rows(std::integral_constant<int, 1>(), t);
  });
}

bool ScoreRunQ8(const KvRun& r, const BlockQ8_0* q8, int n_q, float scale, float* s, size_t lds) {
  if (r.head_dim % 32 != 0 || r.head_dim > 512 || (r.format != KvFormat::kQ4_0 && r.format != KvFormat::kQ8_0)) {
    return false;
  }
  const bool q4 = r.format == KvFormat::kQ4_0;
  auto run = [&](auto nb) {
    if (q4) {
      GgmlScoresQ8<true, nb()>(r, q8, n_q, scale, s, lds);
    } else {
      GgmlScoresQ8<false, nb()>(r, q8, n_q, scale, s, lds);
    }
  };
  switch (r.head_dim) {
    case 64: run(std::integral_constant<size_t, 2>()); break;
    case 128: run(std::integral_constant<size_t, 4>()); break;
    default: run(std::integral_constant<size_t, 0>()); break;
  }
  return true;
}

// q4_0 / q8_0 values for kQ queries at a time (a GQA group): a block's codes are converted once
// for all of them, and the channels go in passes of kVecs vectors per query whose sums stay in
// registers while up to 64 tokens stream by. A token's weight for a block is p_it * d_tb (0
// where p is 0, whatever the scale): with one or two queries a pass holds whole blocks and
// takes it as it goes; with four the 64 tokens' weights are taken first, N tokens at a time
// (a scalar per token and block took as long as the passes), and a pass holds a whole block on
// AVX-512, half of one on AVX2 (q4_0 13-23% faster with GQA groups of 4 on AVX-512,
// BM_AttendDecode). Each channel's sum is the same FMAs in token order whatever kQ is, so a
// query's output does not depend on the queries it shares a pass with.
template <bool kQ4, int kQ>
void GgmlAccumulateQ(const KvRun& r, const float* HWY_RESTRICT p, size_t ldp, float* HWY_RESTRICT out) {
  const DF df;
  constexpr size_t N = hn::MaxLanes(DF());
  constexpr size_t kBlockVecs = 32 / N < 1 ? 1 : 32 / N;  // vectors per block
  // Four queries' sums of a whole block fit AVX-512's 32 registers, half a block AVX2's 16.
  constexpr size_t kVecs = kQ == 1 ? 2 * kBlockVecs
                           : kQ == 2 || N >= 16 ? kBlockVecs
                                                : (kBlockVecs / 2 < 1 ? 1 : kBlockVecs / 2);
  // With more than two queries the 64 tokens' weights are taken first, N tokens at a time:
  // w[query][block][token].
  constexpr bool kPre = kQ > 2;
  constexpr int kTokens = 64;
  const size_t hd = size_t(r.head_dim), n_blocks = hd / 32;
  const size_t blk = kQ4 ? sizeof(BlockQ4_0) : sizeof(BlockQ8_0);
  HWY_ALIGN float w[kPre ? kQ : 1][kPre ? 16 : 1][kPre ? kTokens : 1];  // head_dim <= 512
  auto weight = [&](int i, int t, float d) {
    const float pt = p[size_t(i) * ldp + size_t(t)];
    return pt == 0.0f ? 0.0f : pt * d;
  };
  // Channels [c0, c0 + kV * N) of tokens [t0, t0 + nt).
  auto pass = [&](auto kv_, int t0, int nt, size_t c0) {
    constexpr size_t kV = decltype(kv_)::value;
    constexpr bool kW = kV >= kBlockVecs;  // whole blocks (c0 % 32 == 0), or part of one
    hn::Vec<DF> acc[kQ][kV];
    for (auto& q : acc) {
      for (auto& a : q) a = hn::Zero(df);
    }
    const size_t b0 = c0 / 32, o = c0 % 32;
    const uint8_t* bp = r.rows + size_t(t0) * r.stride + b0 * blk;
    for (int t = 0; t < nt; ++t, bp += r.stride) {
      if (c0 == 0) prefetch_rows_ahead(bp, r.stride);  // the later passes find the rows in L1
      hn::Vec<DF> codes[kV];
      for (size_t v = 0; v < kV; ++v) {
        codes[v] = kW ? BlockCodes<kQ4>(bp + v * N / 32 * blk, v * N % 32) : BlockCodes<kQ4>(bp, o + v * N);
      }
      for (int i = 0; i < kQ; ++i) {
        if constexpr (kW) {
          for (size_t b = 0; b < kV / kBlockVecs; ++b) {
            float wb;
            if constexpr (kPre) {
              wb = w[i][b0 + b][t];
            } else {
              wb = weight(i, t0 + t, F16ToF32(bp + b * blk));
            }
            const auto a = hn::Set(df, wb);
            for (size_t v = b * kBlockVecs; v < (b + 1) * kBlockVecs; ++v) acc[i][v] = hn::MulAdd(a, codes[v], acc[i][v]);
          }
        } else {
          const auto a = hn::Set(df, w[i][b0][t]);
          for (size_t v = 0; v < kV; ++v) acc[i][v] = hn::MulAdd(a, codes[v], acc[i][v]);
        }
      }
    }
    for (int i = 0; i < kQ; ++i) {
      for (size_t v = 0; v < kV; ++v) {
        float* dst = out + size_t(i) * hd + c0 + v * N;
        hn::StoreU(hn::Add(hn::LoadU(df, dst), acc[i][v]), df, dst);
      }
    }
  };
  for (int t0 = 0; t0 < r.n; t0 += kTokens) {
    const int nt = std::min(kTokens, r.n - t0);
    if constexpr (kPre) {  // weight(), N tokens at a time: the scales gathered, one conversion
      const hn::Rebind<hwy::float16_t, DF> dh;
      for (size_t b = 0; b < n_blocks; ++b) {
        int t = 0;
        for (; t + int(N) <= nt; t += int(N)) {
          HWY_ALIGN uint16_t ds[N];
          const uint8_t* x = r.rows + size_t(t0 + t) * r.stride + b * blk;
          for (size_t k = 0; k < N; ++k) std::memcpy(&ds[k], x + k * r.stride, 2);
          const auto d = hn::PromoteTo(df, hn::Load(dh, reinterpret_cast<const hwy::float16_t*>(ds)));
          for (int i = 0; i < kQ; ++i) {
            const auto pt = hn::LoadU(df, p + size_t(i) * ldp + size_t(t0 + t));
            hn::Store(hn::IfThenElseZero(hn::Ne(pt, hn::Zero(df)), hn::Mul(pt, d)), df, &w[i][b][t]);
          }
        }
        for (; t < nt; ++t) {
          const float d = F16ToF32(r.rows + size_t(t0 + t) * r.stride + b * blk);
          for (int i = 0; i < kQ; ++i) w[i][b][t] = weight(i, t0 + t, d);
        }
      }
    }
    size_t c0 = 0;
    for (; c0 + kVecs * N <= hd; c0 += kVecs * N) pass(std::integral_constant<size_t, kVecs>(), t0, nt, c0);
    // head_dim is a multiple of 32: what is left is whole blocks.
    for (; c0 < hd; c0 += 32) pass(std::integral_constant<size_t, kBlockVecs>(), t0, nt, c0);
  }
}

const char* GgmlTarget() { return hwy::TargetName(HWY_TARGET); }

bool AccumulateRunGgml(const KvRun& r, const float* p, int n_q, size_t ldp, float* out) {
  const size_t hd = size_t(r.head_dim);
  const bool q4 = r.format == KvFormat::kQ4_0;
  ForQueryPasses<4>(n_q, [&](auto kq, int i0) {
    constexpr int kQ = decltype(kq)::value;
    if (q4) {
      GgmlAccumulateQ<true, kQ>(r, p + size_t(i0) * ldp, ldp, out + size_t(i0) * hd);
    } else {
      GgmlAccumulateQ<false, kQ>(r, p + size_t(i0) * ldp, ldp, out + size_t(i0) * hd);
    }
  });
  return true;
}

}  // namespace HWY_NAMESPACE
}  // namespace kvq
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace kvq::cpu {
HWY_EXPORT(ScoreRunQ8);
HWY_EXPORT(AccumulateRunGgml);
HWY_EXPORT(GgmlTarget);
bool score_run_q8(const KvRun& run, const BlockQ8_0* q8, int n_q, float scale, float* scores, size_t ld) {
  return HWY_DYNAMIC_DISPATCH(ScoreRunQ8)(run, q8, n_q, scale, scores, ld);
}
const char* ggml_kernels_target() { return HWY_DYNAMIC_DISPATCH(GgmlTarget)(); }
bool accumulate_run_ggml(const KvRun& run, const float* p, int n_q, size_t ld, float* out) {
  return HWY_DYNAMIC_DISPATCH(AccumulateRunGgml)(run, p, n_q, ld, out);
}
}  // namespace kvq::cpu
#endif
