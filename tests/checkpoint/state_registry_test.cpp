#include "checkpoint/state_registry.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace memento::checkpoint {
namespace {

TEST(StateRegistry, KeepsEntriesInRegistrationOrderWithTheirKinds) {
  Tensor weight = Tensor::zeros({4, 8}, DType::kBF16);
  int64_t step = 7;
  double loss_scale = 1024.0;
  std::string config = "model: tiny";
  StateRegistry registry;
  registry.add_tensor("model/model.layers.0.self_attn.q_proj.weight", weight);
  registry.add_int("state/step", &step);
  registry.add_double("state/loss_scale", &loss_scale);
  registry.add_string("meta/config", &config);

  ASSERT_EQ(registry.size(), 4u);
  std::vector<std::string> names;
  for (const StateEntry& e : registry) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"model/model.layers.0.self_attn.q_proj.weight",
                                             "state/step", "state/loss_scale", "meta/config"}));
  const StateEntry* w = registry.find("model/model.layers.0.self_attn.q_proj.weight");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->kind, EntryKind::kTensor);
  EXPECT_EQ(w->group(), "model");
  EXPECT_EQ(w->tensor.raw(), weight.view().raw());
  EXPECT_EQ(registry.find("state/step")->int_value, &step);
  EXPECT_EQ(registry.find("state/loss_scale")->double_value, &loss_scale);
  EXPECT_EQ(registry.find("meta/config")->string_value, &config);
  EXPECT_EQ(registry.find("state/missing"), nullptr);
  EXPECT_EQ(registry.tensor_bytes(), 4u * 8u * 2u);
}

TEST(StateRegistry, SlicesKnowTheirTensor) {
  Tensor flat = Tensor::zeros({40}, DType::kF32);
  StateRegistry registry;
  registry.add_tensor_slice("optim/exp_avg/w", flat.view().flat_range(3, Shape{10}), {4, 8}, 17);
  registry.add_tensor_slice("optim/exp_avg/b", flat.view().flat_range(13, Shape{0}), {8}, 8);
  registry.add_tensor_slice("model/w", flat.view().flat_range(0, Shape{32}), {4, 8}, 0);  // whole
  Tensor whole = Tensor::zeros({2, 3}, DType::kBF16);
  registry.add_tensor("model/b", whole);

  const StateEntry* slice = registry.find("optim/exp_avg/w");
  EXPECT_TRUE(slice->is_partial());
  EXPECT_EQ(slice->tensor.shape(), Shape{10});
  EXPECT_EQ(slice->full_shape, (Shape{4, 8}));
  EXPECT_EQ(slice->offset, 17);
  EXPECT_EQ(slice->tensor.raw(), flat.view().flat_range(3, Shape{10}).raw());
  EXPECT_TRUE(registry.find("optim/exp_avg/b")->is_partial());  // empty: allowed
  const StateEntry* covering = registry.find("model/w");
  EXPECT_FALSE(covering->is_partial());
  EXPECT_EQ(covering->tensor.shape(), (Shape{4, 8}));
  EXPECT_EQ(covering->offset, 0);
  const StateEntry* b = registry.find("model/b");
  EXPECT_FALSE(b->is_partial());
  EXPECT_EQ(b->full_shape, (Shape{2, 3}));
  EXPECT_EQ(registry.tensor_bytes(), (10u + 32u) * 4u + 6u * 2u);
}

TEST(StateRegistry, BoxesKnowTheirTensor) {
  Tensor local = Tensor::zeros({4, 3}, DType::kF32);  // columns 3..5 of a (4, 12) tensor
  Tensor whole = Tensor::zeros({4, 12}, DType::kF32);
  StateRegistry registry;
  registry.add_tensor_box("model/w", local, {4, 12}, {{0, 3}, {4, 3}});
  registry.add_tensor_box("model/v", whole, {4, 12}, TensorBox::whole({4, 12}));
  const StateEntry* box = registry.find("model/w");
  EXPECT_TRUE(box->is_box);
  EXPECT_TRUE(box->is_partial());
  EXPECT_EQ(box->box_start, (Shape{0, 3}));
  EXPECT_EQ(box->full_shape, (Shape{4, 12}));
  EXPECT_EQ(box->region(), TensorRegion::of_box({4, 12}, {{0, 3}, {4, 3}}));
  const StateEntry* all = registry.find("model/v");  // a box of all of it is a whole tensor
  EXPECT_FALSE(all->is_box);
  EXPECT_FALSE(all->is_partial());
  EXPECT_EQ(all->region(), TensorRegion::whole({4, 12}));
  Tensor flat = Tensor::zeros({10}, DType::kF32);
  registry.add_tensor_slice("optim/exp_avg/w", flat, {4, 12}, 17);
  EXPECT_EQ(registry.find("optim/exp_avg/w")->region(), TensorRegion::flat({4, 12}, {17, 27}));
}

TEST(StateRegistry, ValidNamesHaveAGroupAndCleanSegments) {
  EXPECT_TRUE(valid_state_name("model/model.norm.weight"));
  EXPECT_TRUE(valid_state_name("optim/exp_avg/model.norm.weight"));
  EXPECT_FALSE(valid_state_name("step"));  // no group
  EXPECT_FALSE(valid_state_name(""));
  EXPECT_FALSE(valid_state_name("/model/x"));
  EXPECT_FALSE(valid_state_name("model/x/"));
  EXPECT_FALSE(valid_state_name("model//x"));
  EXPECT_FALSE(valid_state_name("model/../x"));
  EXPECT_FALSE(valid_state_name("model/./x"));
  EXPECT_FALSE(valid_state_name("model/x\ny"));
}

using StateRegistryDeathTest = ::testing::Test;

TEST_F(StateRegistryDeathTest, DuplicateNamesAreABug) {
  int64_t a = 0, b = 0;
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_int("state/step", &a);
        registry.add_int("state/step", &b);
      },
      "registered twice");
}

TEST_F(StateRegistryDeathTest, ANameCannotBeBothAnEntryAndAGroup) {
  int64_t a = 0, b = 0;
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_int("state/rng", &a);
        registry.add_int("state/rng/counter", &b);
      },
      "lies under the registered name state/rng");
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_int("state/rng/counter", &b);
        registry.add_int("state/rng", &a);
      },
      "parent path");
}

TEST_F(StateRegistryDeathTest, MalformedNamesAndNullPointersAreBugs) {
  int64_t a = 0;
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_int("step", &a);
      },
      "group/name");
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_double("state/x", nullptr);
      },
      "null pointer");
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_tensor("model/w", Tensor::empty({2, 2}, DType::kF32, Device::meta()));
      },
      "kMeta");
}

TEST_F(StateRegistryDeathTest, SlicesMustBeOneDimensionalAndInsideTheTensor) {
  Tensor flat = Tensor::zeros({40}, DType::kF32);
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_tensor_slice("model/w", flat.view().flat_range(0, Shape{30}), {4, 8}, 3);
      },
      "lie outside a tensor of shape \\[4, 8\\]");
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_tensor_slice("model/w", flat.view().flat_range(0, Shape{2, 5}), {4, 8}, 0);
      },
      "must be 1-D");
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_tensor_slice("model/w", flat.view().flat_range(0, Shape{1}), {4, 8}, -1);
      },
      "outside");
}

TEST_F(StateRegistryDeathTest, BoxesMustLieInsideTheTensorAndMatchTheirView) {
  Tensor local = Tensor::zeros({4, 3}, DType::kF32);
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_tensor_box("model/w", local, {4, 12}, {{0, 10}, {4, 3}});
      },
      "\\[0:4, 10:13\\] is not a box of a tensor of shape \\[4, 12\\]");
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_tensor_box("model/w", local, {4, 12}, {{0, 0}, {3, 4}});
      },
      "the view has shape \\[4, 3\\], the box \\[3, 4\\]");
  EXPECT_DEATH(
      {
        StateRegistry registry;
        registry.add_tensor_box("model/w", local, {4, 12}, {{0}, {4}});
      },
      "not a box");
}

}  // namespace
}  // namespace memento::checkpoint
