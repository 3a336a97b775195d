// Causal attention over a paged KV cache (generation/kv_pages.h): each query of
// a sequence attends to its sequence's positions 0 .. its own, which lie in the
// sequence's pages in order. Queries of many sequences go in one call, split
// among threads by (query, head), so a batch of decoding sequences is one
// parallel region per layer.
#pragma once
#include <cstdint>

namespace gpt {

struct PagedQuery {
  const float* q;        // (C): head h at channels [h*hs, (h+1)*hs)
  float* out;            // (C)
  int64_t position;      // attends to positions 0 .. position
  const int32_t* pages;  // the sequence's pages, in position order
};

// Keys of page p, head h start at k_base + p * page_stride + h * page_size * hs
// (values likewise from v_base): one layer of a pool's pages.
struct PagedKv {
  const void* k_base;
  const void* v_base;
  int64_t page_stride;  // elements from one page to the next
  int64_t page_size;    // positions per page
  bool float16;         // IEEE half elements, else float
  int64_t group = 1;    // query heads per key/value head (grouped-query attention)
};

// softmax(q k^T / sqrt(hs)) v per head for every query, online over the pages
// (no score row is stored). NH heads of width C / NH; query head h reads the
// pages' key/value head h / kv.group.
void paged_attention(const PagedQuery* queries, int64_t n, const PagedKv& kv, int64_t C, int64_t NH);

}  // namespace gpt
