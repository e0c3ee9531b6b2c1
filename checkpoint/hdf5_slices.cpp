#include "checkpoint/hdf5_slices.h"

#include <algorithm>
#include <vector>

#include "checkpoint/crc32c.h"

namespace memento::checkpoint::h5 {
namespace {

// Elements outside the wanted range are checksummed through a buffer of at most this size.
constexpr size_t kStagingBytes = size_t{16} << 20;

// Adds elements [begin, end) of the sub-array at start[0..d) (row-major, relative to it) to the
// selection. `start` and `count` are scratch boxes of the dataspace's rank.
void add_sub_range(hid_t space, const std::vector<hsize_t>& dims, std::vector<hsize_t>& start,
                   std::vector<hsize_t>& count, size_t d, hsize_t begin, hsize_t end,
                   const std::string& where) {
  if (begin >= end) return;
  hsize_t stride = 1;  // elements per index of dimension d
  for (size_t k = d + 1; k < dims.size(); ++k) stride *= dims[k];
  const auto add_rows = [&](hsize_t first, hsize_t rows) {
    start[d] = first;
    count[d] = rows;
    for (size_t k = d + 1; k < dims.size(); ++k) {
      start[k] = 0;
      count[k] = dims[k];
    }
    HDF5_CHECK(
        H5Sselect_hyperslab(space, H5S_SELECT_OR, start.data(), nullptr, count.data(), nullptr),
        where);
  };
  const auto recurse = [&](hsize_t index, hsize_t sub_begin, hsize_t sub_end) {
    start[d] = index;
    count[d] = 1;
    add_sub_range(space, dims, start, count, d + 1, sub_begin, sub_end, where);
  };
  if (stride == 1) {
    add_rows(begin, end - begin);
    return;
  }
  hsize_t first = begin / stride;
  const hsize_t last = (end - 1) / stride;
  if (first == last) {
    recurse(first, begin - first * stride, end - first * stride);
    return;
  }
  if (begin % stride != 0) {  // a partial leading row
    recurse(first, begin % stride, stride);
    ++first;
  }
  const hsize_t whole_end = end / stride;  // rows [first, whole_end) are whole
  if (first < whole_end) add_rows(first, whole_end - first);
  if (end % stride != 0) recurse(whole_end, 0, end % stride);  // a partial trailing row
}

// Reads elements `range` of the dataset into `dest`.
void read_flat(hid_t dataset, hid_t type, ElementRange range, void* dest,
               const std::string& where) {
  if (range.empty()) return;
  const auto n = static_cast<hsize_t>(range.size());
  H5Space memory(HDF5_CHECK(H5Screate_simple(1, &n, nullptr), where));
  H5Space file(HDF5_CHECK(H5Dget_space(dataset), where));
  select_flat_range(file.get(), range, where);
  HDF5_CHECK(H5Dread(dataset, type, memory.get(), file.get(), H5P_DEFAULT, dest), where);
}

}  // namespace

void select_flat_range(hid_t space, ElementRange range, const std::string& where) {
  const int ndim = HDF5_CHECK(H5Sget_simple_extent_ndims(space), where);
  std::vector<hsize_t> dims(ndim);
  std::vector<hsize_t> start(ndim, 0);  // scratch boxes
  std::vector<hsize_t> count(ndim, 1);
  HDF5_CHECK(H5Sget_simple_extent_dims(space, dims.data(), nullptr), where);
  HDF5_CHECK(H5Sselect_none(space), where);
  add_sub_range(space, dims, start, count, 0, static_cast<hsize_t>(range.begin),
                static_cast<hsize_t>(range.end), where);
}

uint32_t read_range_checksummed(hid_t dataset, hid_t type, size_t element_size, ElementRange wanted,
                                void* dest, const std::string& where) {
  const H5Space space(HDF5_CHECK(H5Dget_space(dataset), where));
  const hssize_t numel = HDF5_CHECK(H5Sget_simple_extent_npoints(space.get()), where);
  const int ndim = HDF5_CHECK(H5Sget_simple_extent_ndims(space.get()), where);
  if (wanted.begin == 0 && wanted.end == numel) {  // the whole dataset: one plain read
    if (numel > 0) HDF5_CHECK(H5Dread(dataset, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, dest), where);
    return crc32c(dest, static_cast<size_t>(numel) * element_size);
  }
  MEMENTO_CHECK(ndim > 0 && 0 <= wanted.begin && wanted.begin <= wanted.end && wanted.end <= numel,
                where, ": elements [", wanted.begin, ", ", wanted.end, ") of ", numel);
  std::vector<unsigned char> staging;
  uint32_t crc = 0;
  const auto checksum_only = [&](ElementRange range) {
    const int64_t chunk = static_cast<int64_t>(std::max<size_t>(1, kStagingBytes / element_size));
    for (int64_t at = range.begin; at < range.end; at += chunk) {
      const ElementRange part{at, std::min(range.end, at + chunk)};
      staging.resize(static_cast<size_t>(part.size()) * element_size);
      read_flat(dataset, type, part, staging.data(), where);
      crc = crc32c(staging.data(), staging.size(), crc);
    }
  };
  checksum_only({0, wanted.begin});
  read_flat(dataset, type, wanted, dest, where);
  crc = crc32c(dest, static_cast<size_t>(wanted.size()) * element_size, crc);
  checksum_only({wanted.end, numel});
  return crc;
}

}  // namespace memento::checkpoint::h5
