// What the operating system says this process holds: the figures `ps` and `top` show, read from
// /proc/self/status, so the trainer can print them next to the bytes its resources track; and
// the settings that keep glibc malloc from holding more than the process uses.
#pragma once

#include <cstddef>
#include <string>

namespace memento {

struct ProcessMemory {
  size_t resident = 0;       // VmRSS: pages in RAM (ps's RSS)
  size_t anonymous = 0;      // RssAnon: heap, stacks, anonymous mappings (what malloc holds)
  size_t file = 0;           // RssFile: mapped files (libraries, memory-mapped datasets)
  size_t shared = 0;         // RssShmem: shared memory
  size_t peak_resident = 0;  // VmHWM: the most resident since the process started
};

// The current figures; all zero where /proc is not mounted.
ProcessMemory read_process_memory();

// Bounds glibc malloc for a long run (tensors do not go through it: see SystemResource):
// - two arenas: OpenMP threads no longer allocate in hot loops, and an arena per thread only
//   keeps freed pages;
// - a fixed mmap threshold: a library's block of kHostMmapThreshold or more is a mapping of its
//   own, returned when freed. glibc's default raises the threshold to the largest block freed
//   (up to 32 MiB, 64 MiB kept at the heap's top) and keeps such blocks in the heap. Not lower:
//   OpenBLAS mallocs a 516 KiB job array per threaded GEMM, which at 128 KiB would be an mmap,
//   a munmap and fresh pages every call (170 page faults a step in a small run);
// - a fixed trim threshold: the heap's top keeps up to kHostTrimThreshold free for reuse.
// A setting given in MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or
// GLIBC_TUNABLES wins. Call once at the top of main, before any thread starts.
constexpr size_t kHostMmapThreshold = size_t{4} << 20;
constexpr size_t kHostTrimThreshold = size_t{8} << 20;
void configure_host_allocator();

// At a step boundary: unmaps the cached tensor blocks the steps since the previous call did not
// reuse (one-off sizes: start-up probes, checkpoint staging). Cheap; maps and faults nothing.
void trim_host_memory();

// After a one-off phase (start-up, a checkpoint save or restore): unmaps every cached tensor
// block and hands malloc's free pages back (malloc_trim). The next step maps its blocks again.
void release_host_memory();

// Where the resident anonymous bytes are: the tensor blocks system_resource() gave out and
// caches, malloc's free bytes, and the rest (libraries, thread stacks, runtimes).
struct HostMemoryAccount {
  ProcessMemory process;  // now
  size_t tensors = 0;     // live bytes from system_resource() (mapped blocks, heap blocks)
  size_t cached = 0;      // freed tensor mappings kept for reuse
  size_t heap_free = 0;   // bytes malloc holds free in its arenas (mallinfo2 fordblks)
  size_t libraries = 0;   // RssAnon at record_library_baseline(), less its tensors and free heap
  long long unaccounted = 0;  // RssAnon - tensors - cached - heap_free - libraries
};

// Measures what the process holds before the model is built (libraries loaded and initialised:
// OpenMP team, OpenBLAS buffers, MPI, HDF5; thread stacks) and remembers it for
// account_host_memory(). Call after the first parallel region and GEMM (the peak-FLOP probe).
ProcessMemory record_library_baseline();
HostMemoryAccount account_host_memory();
// "resident 120.0 MiB: anonymous 101.2 MiB = tensors 83.7 MiB + cached 4.0 MiB + free heap
// 1.1 MiB + libraries 11.0 MiB + other 1.4 MiB; files 18.9 MiB (code, mapped data)".
std::string format_host_memory(const HostMemoryAccount& account);

}  // namespace memento
