// CRC-32C (Castagnoli), the checksum stored with every dataset of a checkpoint. Parameters:
// reflected polynomial 0x82F63B78 (0x1EDC6F41 unreflected), initial value 0xFFFFFFFF, input and
// output reflected, final XOR 0xFFFFFFFF; crc32c("123456789") == 0xE3069283 (as iSCSI, ext4,
// Python's crc32c and google-crc32c packages).
#pragma once

#include <cstddef>
#include <cstdint>

namespace memento::checkpoint {

// CRC-32C of `size` bytes. Chains: crc32c(b, nb, crc32c(a, na)) is the CRC of a followed by b.
// Uses the SSE4.2 crc32 instruction when the CPU has it, slice-by-8 tables otherwise.
uint32_t crc32c(const void* data, size_t size, uint32_t crc = 0);

namespace detail {
uint32_t crc32c_slice8(const void* data, size_t size, uint32_t crc);  // portable
uint32_t crc32c_sse42(const void* data, size_t size, uint32_t crc);   // needs SSE4.2
bool cpu_has_sse42();
}  // namespace detail

}  // namespace memento::checkpoint
