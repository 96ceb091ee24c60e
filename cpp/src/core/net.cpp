// Net: building the layer DAG from a model definition, planning buffers, and running the passes.
#include "convnet/net.h"

#include <algorithm>
#include <numeric>
#include <chrono>
#include <limits>
#include <cstring>
#include <cmath>
#include <random>
#include <set>

#include "convnet/error.h"
#include "convnet/ops.h"
#include "convnet/trace.h"
#include "core/device_threads.h"
#include "core/storage.h"
#include "cpu/cpu_ops.h"
#ifdef CONVNET_WITH_CUDA
#include "cuda/runtime.h"
#endif

namespace convnet {

// An event on a GPU lane's stream (cuda::StreamEvent). A build without CUDA has no GPU edges
// to order: there it does nothing.
#ifdef CONVNET_WITH_CUDA
using GpuEvent = cuda::StreamEvent;
#else
struct GpuEvent {
  explicit GpuEvent(int, int = 0) {}
  void record() {}
  void make_wait(int, int = 0) const {}
};
#endif

std::string Net::Lane::name() const {
  return index == 0 ? device.str() : device.str() + " lane " + std::to_string(index);
}

// Per lane: the workspace its layers share (one lane's kernels run one at a time), and the slabs
// its layers' output gradients share (plan_output_grads).
struct Net::LaneState {
  std::unique_ptr<Workspace> workspace;
  struct GradSlab {
    int64_t floats = 0;
    Tensor storage;  // allocated on first use
    int last_lo = 0;  // planning: the node index at which the slab's latest gradient dies
  };
  std::vector<GradSlab> grad_slabs;
};

// One layer with its output, its output's gradient, and the copies its inputs need when they
// live on another device.
struct Net::Node {
  std::unique_ptr<Layer> layer;
  Device device;
  Net::Lane lane;            // where it runs: device and stream
  size_t index = 0;          // in topological order
  int slot = 0;              // its lane's place in Net::lanes_, and its thread's
  // A replicated (data-parallel) layer has one node per replica, consecutive in the order; each
  // node of the layer points to the same group, replica 0 (the primary) first. The primary owns
  // the parameters the net trains; the others copy them before each forward pass.
  std::shared_ptr<std::vector<Node*>> group;
  int replica = 0;
  int first = 0, count = 0;  // the examples of the batch it computes: [first, first + count)
  // Per input: the producing node. aligned[i]: it computes the same examples (the producer's
  // replica of the same index, or the producer itself when neither is replicated); otherwise
  // producers[i] is the producer's primary and the input gathers its examples from the
  // producer's replicas.
  std::vector<Node*> producers;
  std::vector<char> aligned;
  // Readers that do not read this node's output in place (on another device, or computing
  // other examples), with the index of this node's layer among their inputs, in reverse
  // topological order: the order their gradients for this node are added.
  std::vector<std::pair<Node*, size_t>> remote_readers;
  Shape shape;
  Tensor out, grad;
  int grad_slab = -1;  // the slab of its lane that holds grad (plan_output_grads); -1: its own
  bool grad_written = false;
  bool wrote_input_grads = false;  // its last backward wrote the gradients of its inputs
  bool needs_grad = false;   // some layer upstream has parameters
  // LRN -> pool fusion (set_fusion): on the LRN node, the pool that alone reads it; on that
  // pool's node, whether its backward is left to the LRN.
  Node* fused_pool = nullptr;
  bool backward_in_producer = false;
  PinnedBuffer staging;      // input layers on a GPU: pageable batches go up through it
  Net::LayerTime time;
  std::vector<Tensor> mirrors, mirror_grads;  // per input; defined unless it is read in place
  Tensor receive_staging;  // gradients from remote readers on their way into grad
  std::vector<Tensor> replica_grad_staging;  // the primary's: other replicas' gradients arrive here
  Tensor gathered;                           // the primary's: every replica's output, for output()
  // Edges between two GPUs: queued copies ordered by events, no host wait. Recorded on this
  // node's stream after its forward, after its backward, and per input after its copies.
  std::unique_ptr<GpuEvent> forward_done, backward_done;
  std::vector<std::unique_ptr<GpuEvent>> inputs_copied;

  bool primary() const { return replica == 0; }
  bool replicated() const { return group->size() > 1; }
  Node& replica_node(size_t r) const { return *(*group)[r]; }
  // Reads input i where it lies: the same examples on the same lane.
  bool in_place(size_t i) const { return aligned[i] && producers[i]->slot == slot; }
  // An edge between two GPU lanes (of one GPU or two): a copy queued on the reader's lane,
  // ordered by events, with no host wait.
  bool across_gpu_lanes(const Node& other) const {
    return device.is_cuda() && other.device.is_cuda() && slot != other.slot;
  }
  // The nodes whose outputs input i is read from: the aligned producer, or all its replicas.
  std::vector<Node*> sources(size_t i) const {
    return aligned[i] ? std::vector<Node*>{producers[i]} : *producers[i]->group;
  }
  // The examples this node and `other` both compute, [lo, hi) in the batch (empty: lo >= hi).
  std::pair<int, int> shared_examples(const Node& other) const {
    return {std::max(first, other.first), std::min(first + count, other.first + other.count)};
  }
};

// The captured forward_backward of a net whose layers all live on one GPU.
struct Net::Graph {
#ifdef CONVNET_WITH_CUDA
  std::unique_ptr<cuda::StepGraph> step;
#endif
  bool warmed = false;  // an eager pass has allocated every buffer for this batch size
  MathMode math = MathMode::Fp32;  // the cuBLAS math the graph's GEMMs were captured with
};

namespace {

// A deterministic N(0, std) from a 64-bit seed (Box-Muller on mt19937_64), the same on every
// platform, unlike std::normal_distribution.
void gaussian_fill(std::vector<float>& v, float std_dev, uint64_t seed) {
  std::mt19937_64 rng(seed);
  const double two_pi = 6.283185307179586;
  for (size_t i = 0; i < v.size(); i += 2) {
    double u1 = (double(rng() >> 11) + 1.0) * (1.0 / 9007199254740993.0);  // (0, 1]
    double u2 = double(rng() >> 11) * (1.0 / 9007199254740992.0);
    double r = std::sqrt(-2.0 * std::log(u1));
    v[i] = float(std_dev * r * std::cos(two_pi * u2));
    if (i + 1 < v.size()) v[i + 1] = float(std_dev * r * std::sin(two_pi * u2));
  }
}

// The shape of an activation (the batch last) for another batch size.
Shape with_batch(Shape shape, int batch) {
  shape.back() = batch;
  return shape;
}

// The stream of `lane` waits for the event; an event that exists is recorded.
void order_after(const GpuEvent& event, const Net::Lane& lane) {
  event.make_wait(lane.device.index, lane.index);
}
void record_event(const std::unique_ptr<GpuEvent>& event) {
  if (event) event->record();
}

}  // namespace

// Orders a net's GPU lanes at the edges of a pass with events, no host wait. The host's work
// between passes (set_input, the update, reading outputs) goes to lane 0 of each GPU, its host
// lane; so before a pass every GPU lane waits for every host lane (the fork), and after it
// every host lane waits for every GPU lane (the join). Within a pass the edges' events order
// the lanes. Only a net with more than one GPU lane has one.
struct Net::LaneSync {
  struct Point {
    Lane lane;
    std::unique_ptr<GpuEvent> event;
  };
  std::vector<Point> hosts;  // recorded at the fork
  std::vector<Point> lanes;  // recorded at the join

  void fork() {
    for (Point& h : hosts) h.event->record();
    for (Point& l : lanes)
      for (Point& h : hosts)
        if (!(l.lane == h.lane)) order_after(*h.event, l.lane);
  }
  // The host lanes (that of GPU `only`, when given) wait for the work queued on the others.
  void join(const Device* only = nullptr) {
    for (Point& l : lanes) {
      bool recorded = false;
      for (Point& h : hosts) {
        if (l.lane == h.lane || (only && h.lane.device != *only)) continue;
        if (!recorded) l.event->record();
        recorded = true;
        order_after(*l.event, h.lane);
      }
    }
  }
};

namespace {

uint64_t name_hash(const std::string& s, uint64_t seed) {
  uint64_t h = 14695981039346656037ull ^ (seed * 0x9E3779B97F4A7C15ull);
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

}  // namespace

Net::Net(const ModelSpec& spec, std::vector<Device> devices, uint64_t seed)
    : spec_(spec), devices_(std::move(devices)), seed_(seed) {
  CONVNET_CHECK(!spec_.layers.empty(), "model definition has no layers");
  // Layers by name, each name once.
  std::map<std::string, const LayerSpec*> specs;
  for (const LayerSpec& s : spec_.layers) {
    CONVNET_CHECK(specs.emplace(s.name, &s).second, "layer '", s.name, "' is defined twice");
  }
  for (const LayerSpec& s : spec_.layers)
    for (const std::string& in : s.inputs) {
      CONVNET_CHECK(specs.count(in), "layer '", s.name, "' reads '", in,
                    "', which no layer defines");
      CONVNET_CHECK(in != s.name, "layer '", s.name, "' reads its own output");
    }

  // Topological order (Kahn), keeping the definition's order among ready layers.
  std::map<std::string, int> pending;
  for (const LayerSpec& s : spec_.layers) pending[s.name] = static_cast<int>(s.inputs.size());
  std::vector<const LayerSpec*> sorted;
  std::set<std::string> done;
  while (sorted.size() < spec_.layers.size()) {
    bool progress = false;
    for (const LayerSpec& s : spec_.layers) {
      if (done.count(s.name)) continue;
      bool ready = std::all_of(s.inputs.begin(), s.inputs.end(),
                               [&](const std::string& i) { return done.count(i) > 0; });
      if (!ready) continue;
      sorted.push_back(&s);
      done.insert(s.name);
      progress = true;
    }
    if (!progress) {
      std::string cycle;
      for (const LayerSpec& s : spec_.layers)
        if (!done.count(s.name)) cycle += (cycle.empty() ? "" : ", ") + s.name;
      throw ValueError("the model definition has a cycle among layers: " + cycle);
    }
  }

  // Each logical device's lane: a GPU listed again gets a stream of its own, a CPU does not.
  std::vector<Lane> logical_lanes;
  std::map<std::string, int> lanes_taken;
  for (const Device& d : devices_)
    logical_lanes.push_back(Lane{d, d.is_cuda() && devices_.size() > 1 ? lanes_taken[d.str()]++ : 0});

  // Layers, lanes, edges: one node per replica.
  for (const LayerSpec* s : sorted) {
    const std::vector<int> logical = s->replicas.empty() ? std::vector<int>{s->device} : s->replicas;
    auto group = std::make_shared<std::vector<Node*>>();
    for (size_t r = 0; r < logical.size(); ++r) {
      auto n = std::make_unique<Node>();
      n->layer = make_layer(*s);
      if (r == 0) {
        auto [lo, hi] = n->layer->declaration().input_count();
        const int count = static_cast<int>(s->inputs.size());
        CONVNET_CHECK(count >= lo && (hi < 0 || count <= hi), "layer '", s->name, "' (", s->type,
                      ") takes ", lo == hi ? std::to_string(lo) : std::to_string(lo) + (hi < 0 ? " or more" : " to " + std::to_string(hi)),
                      " input(s), got ", count);
        CONVNET_CHECK(logical.size() == 1 || !n->layer->is_input(), "layer '", s->name, "' is an ",
                      s->type, " layer and cannot be replicated: the layers that read it take their part of "
                      "its batch");
      }
      if (devices_.size() <= 1) {  // everything on the one device (the CPU when none)
        n->lane = Lane{devices_.empty() ? Device::cpu() : devices_[0], 0};
      } else {
        CONVNET_CHECK(logical[r] < static_cast<int>(devices_.size()), "layer '", s->name,
                      "' is placed on logical device ", logical[r], " but only ", devices_.size(),
                      " device(s) were given");
        n->lane = logical_lanes[size_t(logical[r])];
      }
      n->device = n->lane.device;
      n->group = group;
      n->replica = int(r);
      group->push_back(n.get());
      for (const std::string& in : s->inputs) {
        Node* producer = by_name_.at(in);
        const bool aligned = producer->group->size() == logical.size();
        n->producers.push_back(aligned ? &producer->replica_node(r) : producer);
        n->aligned.push_back(aligned);
      }
      n->needs_grad = !n->layer->is_input();
      n->index = nodes_.size();
      if (r == 0) {
        by_name_[s->name] = n.get();
        order_.push_back(n->layer.get());
      }
      nodes_.push_back(std::move(n));
    }
  }
  for (auto& n : nodes_) {
    auto it = std::find(lanes_.begin(), lanes_.end(), n->lane);
    if (it == lanes_.end()) {
      require_available(n->device);
      lanes_.push_back(n->lane);
      lane_state_.push_back(std::make_unique<LaneState>());
      lane_state_.back()->workspace = std::make_unique<Workspace>(n->device);
      it = lanes_.end() - 1;
    }
    n->slot = int(it - lanes_.begin());
  }
  for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
    Node& reader = **it;
    for (size_t i = 0; i < reader.producers.size(); ++i) {
      if (reader.in_place(i)) continue;
      for (Node* p : reader.sources(i)) p->remote_readers.emplace_back(&reader, i);
    }
  }
  // LRN layers whose only reader is a pool layer on the same device go back through it.
  std::map<const Node*, int> readers;
  for (auto& n : nodes_)
    for (Node* p : n->producers) ++readers[p];
  for (auto& n : nodes_) {
    if (!n->layer->pool_geometry() || n->producers.size() != 1) continue;
    Node* lrn = n->producers[0];
    if (lrn->layer->goes_back_through_pool() && readers[lrn] == 1 && n->in_place(0)) {
      lrn->fused_pool = n.get();
      n->backward_in_producer = true;
    }
  }
  threads_ = std::make_unique<DeviceThreads>(int(lanes_.size()));
  // The events (every device exists now): the edges between two GPU lanes, a replica's
  // gradients on another GPU lane, and the forks and joins of the lanes besides lane 0.
  auto event_on = [](const Node& n) { return std::make_unique<GpuEvent>(n.device.index, n.lane.index); };
  for (auto& n : nodes_) {
    n->inputs_copied.resize(n->producers.size());
    for (size_t i = 0; i < n->producers.size(); ++i) {
      if (n->in_place(i)) continue;
      for (Node* source : n->sources(i)) {
        if (!n->across_gpu_lanes(*source)) continue;
        if (!source->forward_done) source->forward_done = event_on(*source);
        if (!n->backward_done) n->backward_done = event_on(*n);
        if (!n->inputs_copied[i]) n->inputs_copied[i] = event_on(*n);
      }
    }
    if (!n->primary() && n->across_gpu_lanes(n->replica_node(0)) && !n->backward_done)
      n->backward_done = event_on(*n);
  }
  std::vector<Lane> gpu_lanes;
  for (const Lane& lane : lanes_)
    if (lane.device.is_cuda()) gpu_lanes.push_back(lane);
#ifdef CONVNET_WITH_CUDA
  std::set<int> gpus;  // copies between two GPUs go peer to peer where the pair allows it
  for (const Lane& lane : gpu_lanes) gpus.insert(lane.device.index);
  for (int a : gpus)
    for (int b : gpus) {
      if (a >= b) continue;
      const bool there = cuda::enable_peer_access(a, b), back = cuda::enable_peer_access(b, a);
      if (!there || !back) gpus_without_peer_access_.emplace_back(Device::cuda(a), Device::cuda(b));
    }
#endif
  if (gpu_lanes.size() > 1 || (gpu_lanes.size() == 1 && gpu_lanes[0].index > 0)) {
    lane_sync_ = std::make_unique<LaneSync>();
    for (const Lane& lane : gpu_lanes) {
      lane_sync_->lanes.push_back({lane, std::make_unique<GpuEvent>(lane.device.index, lane.index)});
      const Lane host{lane.device, 0};
      bool known = false;
      for (const LaneSync::Point& h : lane_sync_->hosts) known = known || h.lane == host;
      if (!known) lane_sync_->hosts.push_back({host, std::make_unique<GpuEvent>(host.device.index, 0)});
    }
  }

  int smallest = 1;  // the smallest batch that gives every replica an example
  for (auto& n : nodes_) smallest = std::max(smallest, int(n->group->size()));
  plan(smallest);  // validates every size and creates the parameters
  for (auto& n : nodes_) n->layer->spec().options.reject_unread();
  initialise_params();
  for (auto& n : nodes_) n->layer->place(n->device, lane_state_[size_t(n->slot)]->workspace.get(), /*own_gradients=*/false);
  make_gradient_buckets();  // the primaries' gradients; the other replicas' are their own
  for (Param* p : params())
    if (p->update_period > 1) p->accumulated = Tensor::zeros(p->value.shape(), p->value.device());
  for (auto& n : nodes_)
    if (!n->primary())
      for (Param& p : n->layer->params()) p.grad = Tensor::zeros(p.value.shape(), n->device);
  set_solver(SolverOptions{});
}

void Net::make_gradient_buckets() {
  // Reverse topological order: the order backward writes the gradients, so that a bucket is
  // complete (ready for its all-reduce) as early as possible. A layer's parameters stay in one
  // bucket: they become final together, so splitting them would only hold the first bucket back.
  std::vector<Param*> order = params();
  std::reverse(order.begin(), order.end());
  const int64_t cap = kBucketBytes / int64_t(sizeof(float));
  auto padded = [](int64_t n) { return (n + kBucketAlign - 1) / kBucketAlign * kBucketAlign; };
  auto layer_of = [](const Param* p) { return p->name.substr(0, p->name.rfind('.')); };
  std::map<const Param*, int> slot_of;  // a bucket per lane: its lane alone writes it
  for (auto& n : nodes_)
    if (n->primary())
      for (Param& p : n->layer->params()) slot_of[&p] = n->slot;
  std::vector<GradientBucket> buckets;
  std::map<int, size_t> open;  // lane -> the bucket being filled on it
  std::vector<int64_t> sizes;
  for (size_t k = 0; k < order.size(); ++k) {
    Param* p = order[k];
    const Device d = p->value.device();
    const int slot = slot_of.at(p);
    auto it = open.find(slot);
    const bool layer_starts = k == 0 || layer_of(order[k - 1]) != layer_of(p);
    int64_t n = 0;  // the whole layer's size where it starts
    for (size_t j = k; j < order.size() && (j == k || layer_of(order[j]) == layer_of(p)); ++j)
      n += padded(order[j]->value.numel());
    if (it == open.end() || (layer_starts && sizes[it->second] > 0 && sizes[it->second] + n > cap)) {
      buckets.push_back(GradientBucket{d, Tensor(), {}, {}});
      sizes.push_back(0);
      it = open.insert_or_assign(slot, buckets.size() - 1).first;
    }
    GradientBucket& b = buckets[it->second];
    b.params.push_back(p);
    b.offsets.push_back(sizes[it->second]);
    sizes[it->second] += padded(p->value.numel());
  }
  for (size_t i = 0; i < buckets.size(); ++i) {
    GradientBucket& b = buckets[i];
    b.flat = Tensor::zeros({int(sizes[i])}, b.device);
    for (size_t k = 0; k < b.params.size(); ++k) {
      b.params[k]->grad = b.flat.view(b.offsets[k], b.params[k]->value.shape());
      bucket_of_[b.params[k]] = i;
    }
  }
  bucket_waiting_.assign(buckets.size(), 0);
  bucket_final_ = std::make_unique<std::atomic<bool>[]>(buckets.size());
  buckets_ = std::move(buckets);
}

void Net::set_solver(const SolverOptions& options) {
  if (solver_ && solver_->name() == options.name) {
    const uint64_t step = solver_->step();
    solver_ = Solver::make(options);  // validates before anything changes
    solver_->set_step(step);
    return;
  }
  std::unique_ptr<Solver> s = Solver::make(options);
  for (Param* p : params()) s->init_state(*p);
  solver_ = std::move(s);
}

Net::~Net() = default;

void Net::plan(int batch) {
  drop_graph();  // its buffers are about to be replaced
  for (auto& n : nodes_) {
    // Replica r computes its part of the batch, the first batch % R parts one example longer
    // (the last batch of an epoch or a test set need not divide).
    const int replicas = int(n->group->size());
    CONVNET_CHECK(batch >= replicas, "layer '", n->layer->name(), "' has ", replicas, " replicas: a batch of ",
                  batch, " leaves some of them without an example (give at least ", replicas, ")");
    const int part = batch / replicas, longer = batch % replicas;
    n->count = part + (n->replica < longer ? 1 : 0);
    n->first = n->replica * part + std::min(n->replica, longer);
    std::vector<Shape> in;
    if (n->layer->is_input()) {
      in.push_back({batch});
    } else {
      for (Node* p : n->producers) in.push_back(with_batch(p->shape, n->count));
    }
    n->shape = n->layer->setup(in);
    n->gathered = Tensor();
    n->out = Tensor();
    n->grad = Tensor();
    n->mirrors.assign(n->producers.size(), Tensor());
    n->mirror_grads.assign(n->producers.size(), Tensor());
    n->receive_staging = Tensor();
  }
  batch_ = batch;
  plan_output_grads(grads_shared_);
}

void Net::plan_output_grads(bool shared) {
  drop_graph();  // its kernels hold the buffers about to be replaced
  grads_shared_ = shared;
  for (auto& lane : lane_state_) lane->grad_slabs.clear();
  for (auto& n : nodes_) {
    n->grad_slab = -1;
    if (!n->layer->is_input()) n->grad = Tensor();  // an input's is read after backward: its own
  }
  if (!shared) return;
  // Each lane runs its backward passes in reverse topological order, so a node's output gradient
  // is live over node indices [lo, hi]: from the reader that writes it in place latest in the order
  // (or the node itself, when only readers elsewhere send theirs) down to its own backward (a pool
  // that its LRN goes back through: down to the LRN's). Gradients never live at once share a slab.
  const size_t count = nodes_.size();
  std::vector<int> lo(count), hi(count);
  for (size_t k = 0; k < count; ++k) {
    lo[k] = hi[k] = int(k);
    if (fusion_ && nodes_[k]->backward_in_producer) lo[k] = int(nodes_[k]->producers[0]->index);
  }
  for (const auto& r : nodes_)
    for (size_t i = 0; i < r->producers.size(); ++i)
      if (r->in_place(i)) hi[r->producers[i]->index] = std::max(hi[r->producers[i]->index], int(r->index));
  std::vector<size_t> by_start(count);
  std::iota(by_start.begin(), by_start.end(), size_t(0));
  std::stable_sort(by_start.begin(), by_start.end(), [&](size_t a, size_t b) { return hi[a] > hi[b]; });
  for (size_t k : by_start) {
    Node& n = *nodes_[k];
    if (!n.needs_grad || n.layer->is_input() || (fusion_ && n.fused_pool)) continue;
    // Slabs free by then (intervals come in order of start, so a slab's latest is its last to
    // end): the smallest that fits, else the largest, grown; else a new one.
    auto& slabs = lane_state_[size_t(n.slot)]->grad_slabs;
    const int64_t need = shape_numel(n.shape);
    int fit = -1, largest = -1;
    for (int s = 0; s < int(slabs.size()); ++s) {
      if (slabs[size_t(s)].last_lo <= hi[k]) continue;
      const int64_t have = slabs[size_t(s)].floats;
      if (have >= need && (fit < 0 || have < slabs[size_t(fit)].floats)) fit = s;
      if (largest < 0 || have > slabs[size_t(largest)].floats) largest = s;
    }
    int s = fit >= 0 ? fit : largest;
    if (s < 0) {
      s = int(slabs.size());
      slabs.emplace_back();
    }
    slabs[size_t(s)].floats = std::max(slabs[size_t(s)].floats, need);
    slabs[size_t(s)].last_lo = lo[k];
    n.grad_slab = s;
  }
}

Tensor& Net::output_grad(Node& n) {
  if (n.grad.defined()) return n.grad;
  if (n.grad_slab < 0) {
    n.grad = Tensor(n.shape, n.device);
  } else {
    LaneState::GradSlab& slab = lane_state_[size_t(n.slot)]->grad_slabs[size_t(n.grad_slab)];
    if (!slab.storage.defined()) slab.storage = Tensor({int(slab.floats)}, n.device);
    n.grad = slab.storage.view(0, n.shape);
  }
  return n.grad;
}

void Net::initialise_params() {
  for (auto& n : nodes_)
    for (Param& p : n->layer->params()) {
      std::vector<float> v(static_cast<size_t>(p.value.numel()));
      if (p.init == Param::Init::Constant) std::fill(v.begin(), v.end(), p.init_value);
      else gaussian_fill(v, p.init_std, name_hash(p.name, seed_));
      p.value.copy_from_host(v.data());
    }
}

Net::Node& Net::node(const std::string& name) const {
  auto it = by_name_.find(name);
  CONVNET_CHECK(it != by_name_.end(), "no layer named '", name, "' in this net");
  return *it->second;
}

Layer& Net::layer(const std::string& name) const { return *node(name).layer; }
Device Net::device_of(const std::string& name) const { return node(name).device; }

void Net::set_input(const std::string& name, const Tensor& batch) {
  Node& n = node(name);
  CONVNET_CHECK(n.layer->is_input(), "layer '", name, "' is a '", n.layer->type(),
                "' layer, not an input or labels layer");
  const int batch_size = batch.ndim() == 0 ? 0 : batch.shape().back();
  shard_ = BatchShard{};  // a new batch is a whole one until set_batch_shard says otherwise
  CONVNET_CHECK(batch_size > 0, "input '", name, "': empty batch ", shape_str(batch.shape()));
  if (batch_size != batch_) {
    for (const std::string& other : fresh_inputs_)
      CONVNET_CHECK(other == name, "input '", name, "': expected a batch of shape ",
                    shape_str(n.shape), " (CHWN), got ", shape_str(batch.shape()), ": '", other,
                    "' was given ", batch_, " cases for this step");
    plan(batch_size);
  }
  fresh_inputs_.insert(name);
  Shape want = n.shape;
  bool ok = batch.shape() == want ||
            (n.layer->role() == LayerRole::Labels && batch.numel() == batch_size);
  CONVNET_CHECK(ok, "input '", name, "': expected a batch of shape ", shape_str(want),
                " (CHWN), got ", shape_str(batch.shape()));
  if (!n.out.defined()) n.out = Tensor(n.shape, n.device);
  before_writing_output(n);
  // Pageable host memory goes up through page-locked staging; a pinned batch (the pipeline's
  // PipelineOptions::pinned_memory) is copied by DMA straight from where it is.
  if (n.device.is_cuda() && batch.device().is_cpu() && !batch.is_pinned()) {
    const size_t bytes = sizeof(float) * size_t(batch.numel());
    void* pinned = n.staging.get(bytes);
    std::memcpy(pinned, batch.data(), bytes);
    copy_bytes(n.out.data(), n.device, pinned, Device::cpu(), bytes);
  } else {
    n.out.copy_from(batch);
  }
}

void Net::apply_math_mode() {
#ifdef CONVNET_WITH_CUDA
  for (auto& n : nodes_)
    if (n->device.is_cuda())
      cuda::set_math_mode(n->device.index,
                          math_mode_ == MathMode::Tf32 ? cuda::MathMode::Tf32 : cuda::MathMode::Fp32);
#endif
}

namespace {

// The first element of `t` that is NaN or Inf (-1: none), and its value.
std::pair<int64_t, float> first_nonfinite(const Tensor& t) {
  const std::vector<float> v = t.to_vector();
  for (size_t i = 0; i < v.size(); ++i)
    if (!std::isfinite(v[i])) return {int64_t(i), v[i]};
  return {-1, 0.f};
}

std::string value_str(float x) { return std::isnan(x) ? "nan" : x > 0 ? "inf" : "-inf"; }

}  // namespace

CostReport Net::forward(bool train) {
  run_forward(train);
  CostReport r = cost_report();
  if (!train)
    for (const CostReport::Entry& e : r.costs)
      if (!std::isfinite(e.cost))
        throw NonFiniteError("test pass on a batch of " + std::to_string(r.batch) + ": cost layer '" +
                             e.layer + "' gives a cost of " + value_str(float(e.cost)) +
                             ", so no error rate can be counted; the first non-finite output: " +
                             first_nonfinite_output());
  return r;
}

std::string Net::first_nonfinite_output() const {
  for (const auto& n : nodes_) {
    if (!n->primary() || !n->out.defined()) continue;
    const Tensor& out = output(n->layer->name());  // a replicated layer's parts gathered
    const auto [at, x] = first_nonfinite(out);
    if (at < 0) continue;
    std::string what = "layer '" + n->layer->name() + "' (" + n->layer->type() + "): " + value_str(x) +
                       " at example " + std::to_string(at % out.dim(3));  // CHWN: the batch innermost
    for (const Param& p : n->layer->params())  // a NaN checkpoint shows here
      if (const auto [pat, px] = first_nonfinite(p.value); pat >= 0) {
        what += " (its parameter '" + p.name + "' holds " + value_str(px) + ")";
        break;
      }
    return what;
  }
  return "none (the cost layer computed it from finite inputs)";
}

std::string Net::first_nonfinite_gradient() {
  for (Param* p : params())
    if (const auto [at, x] = first_nonfinite(p->grad); at >= 0)
      return "the gradient of '" + p->name + "' holds " + value_str(x);
  return "";
}

void Net::check_lr_scale(float lr_scale) {
  CONVNET_CHECK(std::isfinite(lr_scale) && lr_scale >= 0.f, "lr_scale must be a finite number >= 0, got ",
                lr_scale);
}

void Net::run_forward(bool train) {
  last_pass_ = PassContext{train, seed_, step_, shard_};
  fresh_inputs_.clear();
  apply_math_mode();
  for (auto& n : nodes_)
    if (n->layer->is_input())
      CONVNET_CHECK(n->out.defined(), "input '", n->layer->name(),
                    "' has no data for this batch: call set_input first");
  // Every device's thread walks the whole order and runs its own layers; a cross-device edge
  // waits for its producer's forward (event k: node k's forward is done) and copies.
  const size_t count = nodes_.size();
  run_on_devices(count, [&](int slot) {
    for (size_t k = 0; k < count; ++k) {
      Node& n = *nodes_[k];
      if (n.slot != slot) continue;
      if (!n.layer->is_input()) forward_node(n);
      threads_->signal(k);
    }
  });
}

void Net::before_writing_output(Node& n) {
  // Readers on other GPUs may still be copying the last pass's output: their copies first.
  for (auto [reader, i] : n.remote_readers)
    if (reader->across_gpu_lanes(n) && reader->inputs_copied[i])
      order_after(*reader->inputs_copied[i], n.lane);
}

PassContext Net::context(const Node& n) const {
  PassContext ctx = last_pass_;
  if (n.replicated()) {  // its examples' place in the batch, and the batch the costs average
    ctx.shard.first += n.first;
    if (ctx.shard.global == 0) ctx.shard.global = batch_;
    ctx.objective_batch = batch_;
  }
  return ctx;
}

void Net::forward_node(Node& n) {
  const double t0 = trace_ ? trace_->now_us() : 0;
  if (!n.primary()) {  // a replica computes with the primary's current parameters
    // Between GPU lanes the copy is queued: the lanes' fork orders it after the last update.
    const bool queued = n.across_gpu_lanes(n.replica_node(0));
    std::vector<Param>& mine = n.layer->params();
    const std::vector<Param>& theirs = n.replica_node(0).layer->params();
    for (size_t k = 0; k < mine.size(); ++k) mine[k].value.copy_from(theirs[k].value, queued);
  }
  std::vector<Tensor> in;
  for (size_t i = 0; i < n.producers.size(); ++i) {
    Node* p = n.producers[i];
    if (n.in_place(i)) {
      in.push_back(p->out);
      continue;
    }
    Tensor& mirror = n.mirrors[i];  // another device's output, or other replicas' examples
    if (!mirror.defined()) mirror = Tensor(with_batch(p->shape, n.count), n.device);
    bool queued = false;
    for (Node* source : n.sources(i)) {
      const auto [lo, hi] = n.shared_examples(*source);
      if (lo >= hi) continue;
      threads_->wait(source->index);  // its forward is queued (on a GPU) or done
      const bool gpus = n.across_gpu_lanes(*source);
      if (gpus) order_after(*source->forward_done, n.lane);
      if (n.aligned[i]) mirror.copy_from(source->out, gpus);
      else mirror.copy_examples(lo - n.first, source->out, lo - source->first, hi - lo, gpus);
      queued = queued || gpus;
    }
    if (queued) record_event(n.inputs_copied[i]);
    in.push_back(mirror);
  }
  if (!n.out.defined()) n.out = Tensor(n.shape, n.device);
  before_writing_output(n);
  settle_for_profile(n.device);
  const auto start = std::chrono::steady_clock::now();
  {
    const OpProfileScope ops(profiling_ ? &n.time.forward_ops : nullptr);
    n.layer->forward(in, n.out, context(n));
  }
  if (profiling_) {
    settle_for_profile(n.device);
    n.time.forward_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ++n.time.forward_calls;
  }
  record(n, "forward", t0);
  record_event(n.forward_done);
}

CostReport Net::cost_report() const {
  CostReport report;
  report.batch = batch_;
  bool classifier_seen = false;
  for (auto& n : nodes_) {
    if (!n->layer->is_cost() || !n->primary()) continue;
    CostStats s;  // summed over the replicas: each has its part of the batch
    for (Node* r : *n->group) {
      const CostStats part = r->layer->cost_stats();
      s.cost_sum += part.cost_sum;
      s.top1_errors += part.top1_errors;
      s.top5_errors += part.top5_errors;
    }
    CostReport::Entry e{n->layer->name(), s.cost_sum / batch_, double(s.top1_errors) / batch_,
                        double(s.top5_errors) / batch_};
    // NaN scores rank below no class: their examples would count as correct.
    if (!n->layer->declaration().is_classifier() || !std::isfinite(e.cost)) {
      e.top1_error = e.top5_error = std::numeric_limits<double>::quiet_NaN();
    }
    if (n->layer->declaration().is_classifier() && !classifier_seen) {
      report.primary = report.costs.size();
      classifier_seen = true;
    }
    report.objective += n->layer->cost_coeff() * e.cost;
    report.costs.push_back(e);
  }
  return report;
}

void Net::backward() {
  if (!grads_shared_) plan_output_grads(true);
  seeded_ = false;
  run_backward();
}

void Net::backward(const std::map<std::string, Tensor>& output_grads) {
  for (const auto& [name, dy] : output_grads) {  // every seed checked before anything changes
    const Node& n = node(name);
    CONVNET_CHECK(!n.layer->is_input(), "backward: layer '", name, "' is an ", n.layer->type(),
                  " layer: no gradient starts there");
    CONVNET_CHECK(!n.layer->is_cost(), "backward: layer '", name, "' is a cost layer, which starts "
                  "backward from its own objective: give the gradient of the layer it reads");
    CONVNET_CHECK(n.out.defined(), "backward: layer '", name, "' has no output yet: run forward first");
    CONVNET_CHECK(dy.shape() == output_shape(name), "backward: the gradient for layer '", name,
                  "' has shape ", shape_str(dy.shape()), ", its output ", shape_str(output_shape(name)),
                  " (CHWN)");
  }
  // Given gradients are live from the start: every layer takes its own buffer.
  if (grads_shared_) plan_output_grads(false);
  for (auto& n : nodes_) n->grad_written = false;
  for (const auto& [name, dy] : output_grads)
    for (Node* r : *node(name).group) {  // each replica its part of the batch
      output_grad(*r);
      if (r->replicated()) r->grad.copy_examples(0, dy, r->first, r->count);
      else r->grad.copy_from(dy);
      r->grad_written = true;
    }
  seeded_ = true;
  try {
    run_backward();
  } catch (...) {
    seeded_ = false;
    throw;
  }
  seeded_ = false;
}

void Net::set_input_grad(const std::string& name, bool on) {
  Node& n = node(name);
  CONVNET_CHECK(n.layer->role() == LayerRole::Input, "layer '", name, "' is ",
                n.layer->role() == LayerRole::Labels ? "a labels layer, which has no gradient"
                                                     : "not an input layer", ": set_input_grad takes an input layer");
  if (n.needs_grad != on) drop_graph();  // a captured backward computes it or not
  n.needs_grad = on;
  if (!on) n.grad = Tensor();
}

const Tensor& Net::input_grad(const std::string& name) const {
  Node& n = node(name);
  CONVNET_CHECK(n.layer->role() == LayerRole::Input && n.needs_grad, "no gradient with respect to '", name,
                "' was asked for: call set_input_grad('", name, "', true) before backward");
  if (!n.grad.defined()) n.grad = Tensor(n.shape, n.device);
  if (!n.grad_written) n.grad.fill(0.f);  // nothing reached it
  return n.grad;
}

void Net::run_backward() {
  apply_math_mode();
  for (auto& n : nodes_) {
    n->wrote_input_grads = false;
    if (!seeded_) n->grad_written = false;
  }
  const bool hooked = bucket_ready_ && !use_graph_;
  size_t next_ready = 0;  // the hook is called in bucket order, on this thread
  if (hooked)
    for (size_t b = 0; b < buckets_.size(); ++b) {
      bucket_waiting_[b] = buckets_[b].params.size();
      bucket_final_[b].store(false);
    }
  auto call_hook = [&] {
    while (next_ready < buckets_.size() && bucket_final_[next_ready].load(std::memory_order_acquire)) {
      // The hook queues its work (an NCCL sum) on lane 0: after the gradients of other lanes.
      const Device& d = buckets_[next_ready].device;
      if (d.is_cuda() && lane_sync_) lane_sync_->join(&d);
      bucket_ready_(next_ready++);
    }
  };
  // In reverse order, each device's thread runs its own layers' backward; just before a layer's,
  // it adds the gradients that its readers on other devices computed for it (event k: node k's
  // backward is done), as late as possible so that the towers wait for each other least. A
  // replicated layer's primary then sums the other replicas' parameter gradients into its own.
  const size_t count = nodes_.size();
  run_on_devices(
      count,
      [&](int slot) {
        for (size_t k = count; k-- > 0;) {
          Node& n = *nodes_[k];
          if (n.slot != slot) continue;
          receive_output_grads(n);
          backward_node(n);
          if (n.primary() && n.replicated()) sum_replica_grads(n);
          record_event(n.backward_done);
          if (hooked && n.primary()) gradients_done(n);
          threads_->signal(k);
        }
      },
      hooked ? std::function<void()>(call_hook) : std::function<void()>());
}

void Net::sum_replica_grads(Node& n) {
  const double t0 = trace_ ? trace_->now_us() : 0;
  std::vector<Param>& sums = n.layer->params();
  n.replica_grad_staging.resize(sums.size());
  for (size_t r = 1; r < n.group->size(); ++r) {  // in replica order: the same sums every time
    Node& other = n.replica_node(r);
    threads_->wait(other.index);
    const bool gpus = n.across_gpu_lanes(other);  // ordered by its event, no host wait
    if (gpus) order_after(*other.backward_done, n.lane);
    for (size_t k = 0; k < sums.size(); ++k) {
      const Tensor& theirs = other.layer->params()[k].grad;
      if (other.device == n.device) {  // added where it is
        axpby(1.f, theirs, sums[k].grad, true);
        continue;
      }
      Tensor& staged = n.replica_grad_staging[k];
      if (!staged.defined()) staged = Tensor(sums[k].value.shape(), n.device);
      staged.copy_from(theirs, gpus);
      axpby(1.f, staged, sums[k].grad, true);
    }
  }
  if (!sums.empty()) record(n, "copy", t0, "sum of replicas' gradients");
}

void Net::gradients_done(Node& n) {
  bool any = false;
  for (Param& p : n.layer->params()) {
    const size_t b = bucket_of_.at(&p);
    if (--bucket_waiting_[b] == 0) {
      bucket_final_[b].store(true, std::memory_order_release);
      any = true;
    }
  }
  if (any) threads_->wake_host();
}

void Net::backward_node(Node& n) {
  if (n.layer->is_input()) return;
  if ((seeded_ || !n.layer->is_cost()) && !n.grad_written) {  // no gradient reaches this layer
    for (Param& p : n.layer->params()) p.grad.fill(0.f);
    return;
  }
  // Given gradients may start at the LRN or its pool: then each goes back on its own.
  const bool fused = fusion_ && !seeded_;
  if (fused && n.backward_in_producer) {  // the LRN before it goes back through both
    n.producers[0]->grad_written = true;
    return;
  }
  const double t0 = trace_ ? trace_->now_us() : 0;
  std::vector<Tensor> in, din;
  std::vector<bool> accumulate;
  for (size_t i = 0; i < n.producers.size(); ++i) {
    Node* p = n.producers[i];
    const bool cross = !n.in_place(i);
    in.push_back(cross ? n.mirrors[i] : p->out);
    if (!p->needs_grad) {
      din.emplace_back();
      accumulate.push_back(false);
      continue;
    }
    if (cross) {  // computed here; the producer's thread brings it home (receive_output_grads)
      if (!n.mirror_grads[i].defined()) n.mirror_grads[i] = Tensor(with_batch(p->shape, n.count), n.device);
      din.push_back(n.mirror_grads[i]);
      accumulate.push_back(false);
    } else {
      din.push_back(output_grad(*p));
      accumulate.push_back(p->grad_written);
    }
  }
  settle_for_profile(n.device);
  const auto start = std::chrono::steady_clock::now();
  {
    const OpProfileScope ops(profiling_ ? &n.time.backward_ops : nullptr);
    if (fused && n.fused_pool) {
      const Node& pool = *n.fused_pool;
      n.layer->backward_through_pool(in, n.out, pool.out, pool.grad, *pool.layer->pool_geometry(),
                                     din, accumulate);
    } else {
      PassContext ctx = context(n);
      ctx.dout_disposable = true;  // nothing reads n's output gradient after this
      n.layer->backward(in, n.out, n.grad, din, accumulate, ctx);
    }
  }
  if (profiling_) {
    settle_for_profile(n.device);
    n.time.backward_ms += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    ++n.time.backward_calls;
  }
  n.wrote_input_grads = true;
  for (size_t i = 0; i < n.producers.size(); ++i) {
    Node* p = n.producers[i];
    if (p->needs_grad && n.in_place(i)) p->grad_written = true;
  }
  record(n, "backward", t0);
}

void Net::receive_output_grads(Node& n) {
  if (!n.needs_grad) return;
  const auto& readers = n.remote_readers;  // in reverse topological order
  for (size_t a = 0, b = 0; a < readers.size(); a = b) {
    // One reading layer's input i: those of its replicas that read n's examples.
    const size_t i = readers[a].second;
    std::vector<Node*> from;
    for (b = a; b < readers.size() && readers[b].first->group == readers[a].first->group &&
                readers[b].second == i;
         ++b) {
      const auto [lo, hi] = n.shared_examples(*readers[b].first);
      if (lo < hi) from.push_back(readers[b].first);
    }
    bool any = false, all = true;
    for (Node* reader : from) {
      threads_->wait(reader->index);  // its backward is queued (on a GPU) or done
      if (n.across_gpu_lanes(*reader)) order_after(*reader->backward_done, n.lane);
      any = any || reader->wrote_input_grads;
      all = all && reader->wrote_input_grads;
    }
    if (!any) continue;  // no gradient reached the readers: none for n
    const double t0 = trace_ ? trace_->now_us() : 0;
    output_grad(n);
    // Straight into the gradient when it is the first to arrive, else through staging.
    Tensor& to = n.grad_written ? n.receive_staging : n.grad;
    if (!to.defined()) to = Tensor(n.shape, n.device);
    if (!all) to.fill(0.f);  // the examples of a reader no gradient reached
    for (Node* reader : from) {
      if (!reader->wrote_input_grads) continue;
      const auto [lo, hi] = n.shared_examples(*reader);
      const bool gpus = n.across_gpu_lanes(*reader);
      if (reader->count == n.count && lo == n.first) to.copy_from(reader->mirror_grads[i], gpus);
      else to.copy_examples(lo - n.first, reader->mirror_grads[i], lo - reader->first, hi - lo, gpus);
    }
    if (n.grad_written) axpby(1.f, n.receive_staging, n.grad, true);
    n.grad_written = true;
    record(n, "copy", t0, "gradient from " + from.front()->layer->name());
  }
}

void Net::run_on_devices(size_t events, const std::function<void(int)>& job,
                         const std::function<void()>& host_work) {
  // CPU devices side by side share the cores: each runs its OpenMP loops on its share.
  const int share = threads_per_cpu_device();
  const bool side_by_side = lanes_.size() > 1;
  if (lane_sync_) lane_sync_->fork();
  try {
    threads_->run(events, [&](int slot) {
      const Lane& lane = lanes_[size_t(slot)];
      if (side_by_side && lane.device.is_cpu()) cpu::set_num_threads(share);
#ifdef CONVNET_WITH_CUDA
      struct OnLane {  // this thread queues on the slot's lane; the caller's thread gets 0 back
        explicit OnLane(int lane) { cuda::set_lane(lane); }
        ~OnLane() { cuda::set_lane(0); }
      } on_lane(lane.index);
#endif
      job(slot);
    }, host_work);
  } catch (...) {
    try {
      if (lane_sync_) lane_sync_->join();
    } catch (...) {  // the job's error is the one to report
    }
    throw;
  }
  if (lane_sync_) lane_sync_->join();
}

int Net::threads_per_cpu_device() const {
  if (lanes_.size() == 1) return cpu::num_threads();
  if (device_threads_ > 0) return device_threads_;
  int cpu_devices = 0;
  for (const Lane& l : lanes_) cpu_devices += l.device.is_cpu();
  return std::max(1, cpu::num_threads() / std::max(1, cpu_devices));
}

void Net::record(const Node& n, const char* phase, double start_us, const std::string& what) {
  if (!trace_) return;
#ifdef CONVNET_WITH_CUDA
  // The span ends with its lane's kernels (not the other lanes': they run side by side).
  if (n.device.is_cuda()) cuda::synchronize_lane(n.device.index);
#endif
  std::string name = what.empty() ? n.layer->name() : what;
  if (n.replicated()) name += " [replica " + std::to_string(n.replica) + "]";
  trace_->add(Trace::Span{n.lane.name(), name, phase, start_us, trace_->now_us()});
}

void Net::set_seed(uint64_t seed) {
  if (seed != seed_) drop_graph();  // the dropout kernels hold the seed
  seed_ = seed;
}

void Net::set_cuda_graph(bool on) {
  if (on) {
    const Node& first = *nodes_.front();
    for (auto& n : nodes_)
      CONVNET_CHECK(n->device.is_cuda() && n->slot == first.slot && n->lane.index == 0,
                    "CUDA graphs need every layer on one GPU: layer '", n->layer->name(),
                    "' is on ", n->lane.name(), (first.device.is_cuda() && n->slot != first.slot
                                                     ? ", layer '" + first.layer->name() + "' on " +
                                                           first.lane.name()
                                                     : std::string()),
                    n->device == first.device && n->device.is_cuda() ? " (a graph captures lane 0 alone)" : "");
  }
  use_graph_ = on;
  if (!on) drop_graph();
}

void Net::drop_graph() { graph_.reset(); }

void Net::set_fusion(bool on) {
  if (on == fusion_) return;
  drop_graph();  // the captured backward pass is the other one
  fusion_ = on;
  plan_output_grads(grads_shared_);  // fused LRN outputs need no gradient; their pools' live longer
}

std::vector<std::string> Net::fused_layers() const {
  std::vector<std::string> out;
  if (fusion_)
    for (auto& n : nodes_)
      if (n->fused_pool && n->primary()) out.push_back(n->layer->name());
  return out;
}

size_t Net::cuda_graph_nodes() const {
#ifdef CONVNET_WITH_CUDA
  if (graph_ && graph_->step && graph_->step->ready()) return graph_->step->nodes();
#endif
  return 0;
}

CostReport Net::forward_backward() {
  // Before the graph below is made: planning drops it, and backward() then finds nothing to plan.
  if (!grads_shared_) plan_output_grads(true);
#ifdef CONVNET_WITH_CUDA
  if (use_graph_ && !profiling_) {
    if (!graph_) graph_ = std::make_unique<Graph>();
    Graph& g = *graph_;
    if (g.step && (!g.step->ready() || g.math != math_mode_)) g.step.reset();
    if (!g.step && !g.warmed) {
      CostReport r = forward(true);
      backward();
      g.warmed = true;
      return r;
    }
    if (!g.step) {
      apply_math_mode();  // outside the capture: it may create the cuBLAS handle
      g.step = std::make_unique<cuda::StepGraph>(nodes_.front()->device.index);
      try {
        g.step->begin();
        run_forward(true);
        backward();
        g.step->end();
      } catch (...) {
        g.step.reset();  // abandons the capture
        throw;
      }
      g.math = math_mode_;
    }
    last_pass_ = PassContext{true, seed_, step_, shard_};
    fresh_inputs_.clear();
    g.step->set_dropout_step(step_);
    g.step->launch();
    return cost_report();
  }
#endif
  CostReport r = forward(true);
  backward();
  return r;
}

void Net::update(float lr_scale) {
  check_lr_scale(lr_scale);
  solver_->begin_step();
  for (Param* p : params()) {
    if (p->update_period > 1) {  // sums the gradients of the steps between its updates
      axpby(1.f, p->grad, p->accumulated, true);
      if ((step_ + 1) % uint64_t(p->update_period) != 0) continue;
      p->grad.copy_from(p->accumulated);
      p->accumulated.fill(0.f);
    }
    solver_->update(*p, p->lr * lr_scale);
  }
  ++step_;
}

const Tensor& Net::output(const std::string& layer) const {
  Node& n = node(layer);
  CONVNET_CHECK(n.out.defined(), "layer '", layer, "' has no output yet: run forward first");
  if (!n.replicated()) return n.out;
  // A replicated layer's output is its replicas' parts, gathered on the primary's device.
  if (!n.gathered.defined()) n.gathered = Tensor(with_batch(n.shape, batch_), n.device);
  for (Node* r : *n.group) n.gathered.copy_examples(r->first, r->out, 0, r->count);
  return n.gathered;
}

// A GPU layer's kernels run after its call returns: while profiling, the device is waited for
// before and after each layer, so that its time is the kernels' and not their launches'. (The
// lanes of a GPU then no longer overlap: a profile shows each layer alone.)
void Net::settle_for_profile(const Device& device) const {
  if (profiling_ && device.is_cuda()) cuda_synchronize(device.index);
}

void Net::set_profiling(bool on) {
  profiling_ = on;
  for (auto& n : nodes_) n->time = LayerTime{n->layer->name()};
}

std::vector<Net::MemoryUse> Net::memory_use() const {
  std::vector<MemoryUse> out;
  std::set<const void*> counted;
  auto add = [&](const char* kind, const std::string& layer, const std::string& what, const Tensor& t) {
    if (!t.defined() || !counted.insert(t.storage_id()).second) return;
    out.push_back({kind, layer, what, t.device(), t.storage_bytes()});
  };
  for (const auto& n : nodes_)
    for (const Param& p : n->layer->params()) add("parameters", n->layer->name(), p.name, p.value);
  for (const GradientBucket& b : buckets_) add("parameter gradients", "", "gradient bucket", b.flat);
  for (const auto& n : nodes_)
    for (const Param& p : n->layer->params()) {
      add("parameter gradients", n->layer->name(), p.name + " gradient", p.grad);
      for (const auto& [key, t] : p.state) add("solver state", n->layer->name(), p.name + " " + key, t);
      add("solver state", n->layer->name(), p.name + " accumulated gradient", p.accumulated);
    }
  for (const auto& n : nodes_) {
    add("activations", n->layer->name(), "output", n->out);
    add("activations", n->layer->name(), "gathered output", n->gathered);
  }
  for (const auto& n : nodes_) add("activation gradients", n->layer->name(), "output gradient", n->grad);
  for (const auto& n : nodes_)
    for (const auto& [what, t] : n->layer->buffers()) add("layer buffers", n->layer->name(), what, t);
  for (const auto& n : nodes_) {
    const std::string& name = n->layer->name();
    for (const Tensor& t : n->mirrors) add("device copies", name, "input copy", t);
    for (const Tensor& t : n->mirror_grads) add("device copies", name, "input gradient copy", t);
    add("device copies", name, "arriving gradients", n->receive_staging);
    for (const Tensor& t : n->replica_grad_staging) add("device copies", name, "replica gradients", t);
  }
  for (size_t i = 0; i < lane_state_.size(); ++i)
    if (const Workspace* w = lane_state_[i]->workspace.get(); w && w->bytes() > 0)
      out.push_back({"workspace", "", "im2col and scratch of " + lanes_[i].name(), lanes_[i].device, w->bytes()});
  return out;
}

std::vector<Net::LayerTime> Net::layer_times() const {
  std::vector<LayerTime> out;  // a replicated layer's: the sums over its replicas
  for (auto& n : nodes_) {
    if (!n->primary()) {
      LayerTime& t = out.back();
      t.forward_ms += n->time.forward_ms;
      t.backward_ms += n->time.backward_ms;
      t.forward_calls += n->time.forward_calls;
      t.backward_calls += n->time.backward_calls;
      for (const auto& [op, time] : n->time.forward_ops) t.forward_ops[op] += time;
      for (const auto& [op, time] : n->time.backward_ops) t.backward_ops[op] += time;
      continue;
    }
    LayerTime t = n->time;
    t.layer = n->layer->name();
    out.push_back(t);
  }
  return out;
}

Shape Net::output_shape(const std::string& layer) const {
  return with_batch(node(layer).shape, batch_);
}

std::vector<Param*> Net::params() {
  std::vector<Param*> out;  // the primaries': the other replicas copy them
  for (auto& n : nodes_)
    if (n->primary())
      for (Param& p : n->layer->params()) out.push_back(&p);
  return out;
}

Param& Net::param(const std::string& name) {
  for (Param* p : params())
    if (p->name == name) return *p;
  throw ValueError("no parameter named '" + name + "' (parameters are named <layer>.weights and <layer>.biases)");
}

int64_t Net::parameter_count() const {
  int64_t total = 0;
  for (auto& n : nodes_)
    if (n->primary())
      for (const Param& p : n->layer->params()) total += p.value.numel();
  return total;
}

}  // namespace convnet
