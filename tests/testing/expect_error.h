// Expects a call to throw ErrorType whose message contains `needle` (a key, file, op or tensor).
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <utility>

#include "core/error.h"

namespace memento::testing {

template <typename ErrorType, typename F>
void expect_error_naming(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "expected an error naming " << needle;
  } catch (const ErrorType& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// The message of the ErrorType that f() throws; a test failure (and "") when it throws none.
template <typename ErrorType, typename F>
std::string error_message_of(F&& f) {
  try {
    f();
  } catch (const ErrorType& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an error";
  return "";
}

// The message of the DataError that f() throws (a bad file, tokenizer or dataset).
template <typename F>
std::string data_error_of(F&& f) {
  return error_message_of<DataError>(std::forward<F>(f));
}

template <typename F>
void expect_shape_error(F&& f, const std::string& needle) {
  expect_error_naming<ShapeError>(std::forward<F>(f), needle);
}

}  // namespace memento::testing
