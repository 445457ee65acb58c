#include "mettagrid/game.hpp"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#include "mettagrid/actions.hpp"

namespace mettagrid {

Game::Game(std::shared_ptr<const Rules> rules, int index)
    : rules_(std::move(rules)),
      spec_(&rules_->spec),
      index_(index),
      num_items_(rules_->spec.num_items),
      num_agents_(rules_->num_agents),
      num_tokens_(rules_->spec.num_tokens) {
  pad_ = rules_->pad;
  order_.resize(num_agents_);
  agents_.reserve(num_agents_);
  stats_.assign(static_cast<size_t>(rules_->stats.size()) * num_agents_, 0.0);
  game_stats_.assign(rules_->game_stat_names.size(), 0.0);
}

void Game::set_rules(std::shared_ptr<const Rules> rules, int config, int64_t task) {
  config_ = config;
  task_ = task;
  if (rules.get() == rules_.get()) return;
  rules_ = std::move(rules);
  spec_ = &rules_->spec;
  game_stats_.assign(rules_->game_stat_names.size(), 0.0);  // one per object kind of this config
}

// ---------------------------------------------------------------------------------------------
// Building the map

void Game::init_grid(int h, int w) {
  height_ = h;
  width_ = w;
  stride_ = w + 2 * pad_;
  const size_t cells = static_cast<size_t>(h + 2 * pad_) * stride_;
  cells_.assign(cells, Cell());
  window_.clear();
  for (const ObsOffset& off : rules_->obs_offsets) window_.push_back(static_cast<ptrdiff_t>(off.dr) * stride_ + off.dc);
}

int Game::add_object(int type_index, int r, int c) {
  const ObjectSpec& os = spec_->objects[type_index];
  const int id = static_cast<int>(objects_.size());
  Object o;
  o.type_index = type_index;
  o.type_id = static_cast<uint8_t>(os.type_id);
  o.layer = 1;
  o.is_converter = !os.is_wall;
  o.swappable = os.swappable;
  o.row = r;
  o.col = c;
  objects_.push_back(o);
  inv_.resize(inv_.size() + num_items_, 0);
  cells_[cell(r, c)].object = id;
  game_stats_[type_index] += 1.0;
  if (o.is_converter && os.initial_resource_count > 0)
    for (const auto& p : os.outputs) add_to_converter(id, p.first, os.initial_resource_count);
  return id;
}

int Game::add_agent(int r, int c) {
  const int id = static_cast<int>(objects_.size());
  Object o;
  o.type_id = 0;
  o.layer = 0;
  o.row = r;
  o.col = c;
  o.agent = static_cast<int>(agents_.size());
  objects_.push_back(o);
  inv_.resize(inv_.size() + num_items_, 0);
  cells_[cell(r, c)].agent = id;
  Agent a;
  a.object = id;
  a.group = static_cast<uint8_t>(spec_->agent.group_id);
  agents_.push_back(a);
  // Initial inventory, item by item in id order, within the item's limit and its shared limits.
  const int agent = static_cast<int>(agents_.size()) - 1;
  for (int i = 0; i < num_items_; ++i) inv(id, i) = std::min(spec_->agent.initial_inventory[i], agent_room(agent, i));
  return id;
}

void Game::build_ascii() {
  const auto& grid = spec_->map.grid;
  init_grid(static_cast<int>(grid.size()), static_cast<int>(grid[0].size()));
  for (int r = 0; r < height_; ++r)
    for (int c = 0; c < width_; ++c) {
      const int v = grid[r][c];
      if (v == -2) add_agent(r, c);
      else if (v >= 0) add_object(v, r, c);
    }
}

void Game::build_arena() {
  const MapSpec& m = spec_->map;
  const int h = m.rooms_r * m.room_size + 2 * m.border, w = m.rooms_c * m.room_size + 2 * m.border;
  init_grid(h, w);
  const int rooms = m.rooms_r * m.rooms_c, area = m.room_size * m.room_size;
  // Agents are dealt to rooms in turn: agent a lives in room a % rooms.
  std::vector<int> agent_cell(num_agents_);
  std::vector<std::pair<int, int>> object_cells;  // (object index, flat cell)
  for (int room = 0; room < rooms; ++room) {
    const int r0 = m.border + (room / m.rooms_c) * m.room_size, c0 = m.border + (room % m.rooms_c) * m.room_size;
    scratch_.resize(area);
    for (int i = 0; i < area; ++i) scratch_[i] = i;
    int used = 0;
    auto draw = [&]() {  // partial Fisher-Yates: a fresh random cell of this room
      const int j = used + static_cast<int>(rng_.below(static_cast<uint32_t>(area - used)));
      std::swap(scratch_[used], scratch_[j]);
      const int k = scratch_[used++];
      return (r0 + k / m.room_size) * w + (c0 + k % m.room_size);
    };
    for (int a = room; a < num_agents_; a += rooms) agent_cell[a] = draw();
    for (const auto& [index, count] : m.room_objects)
      for (int k = 0; k < count; ++k) object_cells.emplace_back(index, draw());
  }
  for (int a = 0; a < num_agents_; ++a) add_agent(agent_cell[a] / w, agent_cell[a] % w);
  for (const auto& [index, flat] : object_cells) add_object(index, flat / w, flat % w);
  if (m.wall_index >= 0 && m.border > 0)
    for (int r = 0; r < h; ++r)
      for (int c = 0; c < w; ++c)
        if (r < m.border || c < m.border || r >= h - m.border || c >= w - m.border) add_object(m.wall_index, r, c);
}

void Game::reset(uint64_t base_seed, int episode, uint8_t* obs) {
  episode_ = episode;
  rng_.seed_with(episode_seed(base_seed, static_cast<uint64_t>(index_), static_cast<uint64_t>(episode)));
  tick_ = 0;
  done_ = truncated_ = false;
  objects_.clear();
  inv_.clear();
  agents_.clear();
  events_.clear();
  event_seq_ = 0;
  std::fill(stats_.begin(), stats_.end(), 0.0);
  std::fill(game_stats_.begin(), game_stats_.end(), 0.0);
  tokens_written_ = tokens_dropped_ = 0;
  if (spec_->map.kind == "ascii") build_ascii();
  else build_arena();
  limit_ = spec_->max_steps;
  if (episode == 0 && spec_->random_first_episode_cut && spec_->max_steps > 0)
    limit_ = 1 + static_cast<int64_t>(rng_.below(static_cast<uint32_t>(spec_->max_steps)));
  for (auto& a : agents_) a.score = score(static_cast<int>(&a - agents_.data()));
  for (int id = 0; id < static_cast<int>(objects_.size()); ++id)
    if (objects_[id].is_converter) maybe_start(id);
  for (int a = 0; a < num_agents_; ++a) write_obs(a, obs + static_cast<size_t>(a) * num_tokens_ * 3);
}

// ---------------------------------------------------------------------------------------------
// Grid and inventory helpers used by the actions

void Game::move_agent(int agent, int r, int c) {
  Object& o = objects_[agents_[agent].object];
  cells_[cell(o.row, o.col)].agent = -1;
  o.row = r;
  o.col = c;
  cells_[cell(r, c)].agent = agents_[agent].object;
}

void Game::swap_agent_with_object(int agent, int object) {
  Object& a = objects_[agents_[agent].object];
  Object& o = objects_[object];
  const int ar = a.row, ac = a.col;
  cells_[cell(o.row, o.col)].object = -1;
  move_agent(agent, o.row, o.col);
  o.row = ar;
  o.col = ac;
  cells_[cell(ar, ac)].object = object;
}

int Game::agent_room(int agent, int item) const {
  const int obj = agents_[agent].object;
  int room = spec_->agent.resource_limits[item] - inventory(obj, item);
  for (int g : rules_->item_groups[item]) {
    const SharedLimit& sl = spec_->agent.shared_limits[g];
    int64_t sum = 0;
    for (int i : sl.items) sum += inventory(obj, i);
    room = static_cast<int>(std::min<int64_t>(room, sl.limit - sum));
  }
  return std::max(room, 0);
}

int Game::give_agent(int agent, int item, int amount) {
  const int n = std::min(amount, agent_room(agent, item));
  if (n <= 0) return 0;
  inv(agents_[agent].object, item) += n;
  stat(agent, rules_->stats.gained(item)) += n;
  return n;
}

int Game::take_agent(int agent, int item, int amount) {
  int32_t& held = inv(agents_[agent].object, item);
  const int n = std::min(amount, static_cast<int>(held));
  if (n <= 0) return 0;
  held -= n;
  stat(agent, rules_->stats.lost(item)) += n;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Converters: an event queue ordered by (tick, insertion)

namespace {
struct EventLater {
  bool operator()(const Event& a, const Event& b) const {
    return a.tick != b.tick ? a.tick > b.tick : a.seq > b.seq;
  }
};
}  // namespace

void Game::schedule(int64_t at, int object, EventKind kind) {
  events_.push_back({at, event_seq_++, object, kind});
  std::push_heap(events_.begin(), events_.end(), EventLater());
}

int Game::add_to_converter(int id, int item, int64_t amount) {
  int32_t& held = inv(id, item);
  const int64_t n = std::min<int64_t>(amount, INT32_MAX - static_cast<int64_t>(held));
  if (n <= 0) return 0;
  held += static_cast<int32_t>(n);
  return static_cast<int>(n);
}

// Starts conversions while the converter may: a loop, not a recursion, because with
// conversion_ticks 0 and cooldown 0 a conversion finishes and the next one starts within the same
// call (up to max_output times). Rules refuses zero-time cycles that never change the inventory.
void Game::maybe_start(int id) {
  Object& o = objects_[id];
  if (!o.is_converter) return;
  const ObjectSpec& os = spec_->objects[o.type_index];
  if (os.inputs.empty() && os.outputs.empty()) return;  // would convert forever doing nothing
  while (!o.converting && !o.cooling) {
    int64_t out = 0;  // 64 bits: outputs held may each be near INT32_MAX
    for (const auto& p : os.outputs) out += inv(id, p.first);
    if (out >= os.max_output) return;
    for (const auto& p : os.inputs)
      if (inv(id, p.first) < p.second) return;
    for (const auto& p : os.inputs) inv(id, p.first) -= p.second;
    o.converting = true;
    if (os.conversion_ticks > 0) {
      schedule(tick_ + os.conversion_ticks, id, EventKind::ConversionDone);
      return;
    }
    if (!finish_conversion(id)) return;
  }
}

bool Game::finish_conversion(int id) {
  Object& o = objects_[id];
  const ObjectSpec& os = spec_->objects[o.type_index];
  o.converting = false;
  for (const auto& p : os.outputs) add_to_converter(id, p.first, p.second);
  if (os.cooldown > 0) {
    o.cooling = true;
    o.cooldown_end = tick_ + os.cooldown;
    schedule(o.cooldown_end, id, EventKind::CooldownDone);
    return false;
  }
  return true;
}

void Game::fire_events() {
  while (!events_.empty() && events_.front().tick <= tick_) {
    std::pop_heap(events_.begin(), events_.end(), EventLater());
    const Event e = events_.back();
    events_.pop_back();
    if (e.kind == EventKind::ConversionDone) {
      if (finish_conversion(e.object)) maybe_start(e.object);
    } else {
      objects_[e.object].cooling = false;
      maybe_start(e.object);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// A step

// The last_reward token: round(r * 100) as a uint8, wrapping like the original's cast (so a penalty of
// 0.01 shows as 255). Out-of-range and NaN rewards are first brought into a range where every step is
// defined behaviour.
static inline uint8_t reward_byte(float r) {
  double v = static_cast<double>(r) * 100.0;
  if (!(v == v)) v = 0.0;
  v = std::max(-1e9, std::min(1e9, v));
  return static_cast<uint8_t>(static_cast<uint64_t>(static_cast<int64_t>(std::llround(v))) & 0xFF);
}

void Game::act(int agent, int32_t action) {
  Agent& a = agents_[agent];
  if (a.frozen > 0) {  // skipped: neither success nor failure (the counter runs down at step start)
    stat(agent, rules_->stats.frozen_ticks()) += 1.0;
    a.last_action = (action >= 0 && action < rules_->num_actions) ? action : rules_->noop_action;
    a.last_action_arg = (action >= 0 && action < rules_->num_actions) ? rules_->actions[action].arg : 0;
    a.last_success = false;
    return;
  }
  if (action < 0 || action >= rules_->num_actions) {  // tolerated: a failed noop
    stat(agent, rules_->stats.invalid()) += 1.0;
    stat(agent, rules_->stats.failed(rules_->noop_action)) += 1.0;
    a.last_action = rules_->noop_action;
    a.last_action_arg = 0;
    a.last_success = false;
    a.penalty += spec_->agent.action_failure_penalty;
    return;
  }
  rules_->actions[action].handler->handle(*this, agent, action, rules_->actions[action].arg);
}

float Game::score(int agent) const {
  const int obj = agents_[agent].object;
  float s = 0.0f;
  for (int item : rules_->reward_items)
    s += std::min(static_cast<float>(inventory(obj, item)) * spec_->agent.reward_weights[item],
                  spec_->agent.reward_caps[item]);
  return s;
}

void Game::step(const int32_t* actions, uint8_t* obs, float* rewards) {
  ++tick_;
  fire_events();
  // Freeze counters run down at the start of a step: an agent hit with freeze_duration F shows F
  // right after the hit and skips its actions of that step and the next F - 1.
  for (auto& ag : agents_)
    if (ag.frozen > 0) --ag.frozen;

  // Seeded shuffled order; attacks resolve before everything else.
  for (int i = 0; i < num_agents_; ++i) order_[i] = i;
  for (int i = num_agents_ - 1; i > 0; --i) std::swap(order_[i], order_[rng_.below(static_cast<uint32_t>(i + 1))]);
  const int num_actions = rules_->num_actions;
  const FlatAction* acts = rules_->actions.data();
  for (int i = 0; i < num_agents_; ++i) {
    const int a = order_[i];
    const int32_t act_id = actions[a];
    if (act_id >= 0 && act_id < num_actions && acts[act_id].kind == ActionKind::Attack) act(a, act_id);
  }
  for (int i = 0; i < num_agents_; ++i) {
    const int a = order_[i];
    const int32_t act_id = actions[a];
    if (!(act_id >= 0 && act_id < num_actions && acts[act_id].kind == ActionKind::Attack)) act(a, act_id);
  }

  // As in the original, observations are written before this step's rewards are computed, so the
  // last_reward token carries only the failure penalties collected in this step's actions.
  for (auto& ag : agents_) ag.reward_token = ag.penalty == 0.0f ? 0 : reward_byte(-ag.penalty);
  for (int a = 0; a < num_agents_; ++a) write_obs(a, obs + static_cast<size_t>(a) * num_tokens_ * 3);

  for (int a = 0; a < num_agents_; ++a) {
    Agent& ag = agents_[a];
    const float s = rules_->reward_items.empty() ? 0.0f : score(a);
    const float r = s - ag.score - ag.penalty;
    ag.score = s;
    ag.penalty = 0.0f;
    ag.current_reward = r;
    ag.total_reward += r;
    rewards[a] = r;
  }

  if (spec_->max_steps > 0 && tick_ >= limit_) {
    done_ = true;
    truncated_ = spec_->episode_truncates || limit_ != spec_->max_steps ||
                 (episode_ == 0 && spec_->random_first_episode_cut);
  }
}

// ---------------------------------------------------------------------------------------------
// Observations

static inline uint8_t clamp255(int64_t v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); }


namespace {
// Token writer for one agent's observation: tokens past the limit are counted, not written.
struct TokenWriter {
  uint8_t* out;
  int n, limit;
  inline void put(uint8_t loc, uint8_t f, uint8_t v) {
    if (n < limit) {
      uint8_t* t = out + 3 * n;
      t[0] = loc;
      t[1] = f;
      t[2] = v;
    }
    ++n;
  }
};
}  // namespace

// Aligned: the speed of this hot loop varied by ~5% with where the linker happened to place it.
__attribute__((aligned(64))) void Game::write_obs(int agent, uint8_t* out) {
  const int T = num_tokens_;
  std::memset(out, 0xFF, static_cast<size_t>(T) * 3);
  const Agent& ag = agents_[agent];
  const Object& self = objects_[ag.object];
  const uint8_t centre = rules_->centre_location;
  const uint8_t* f = rules_->feature_id;  // feature ids by feature::Name, from the spec
  const uint8_t inventory_base = static_cast<uint8_t>(spec_->inventory_feature_base);
  TokenWriter w{out, 0, T};
  w.put(centre, f[feature::kEpisodeCompletion],
        spec_->max_steps > 0 ? clamp255(std::llround(static_cast<double>(tick_) / spec_->max_steps * 255.0)) : 0);
  w.put(centre, f[feature::kLastAction], clamp255(ag.last_action));
  w.put(centre, f[feature::kLastActionArg], clamp255(ag.last_action_arg));
  w.put(centre, f[feature::kLastReward], ag.reward_token);

  const Cell* base = cells_.data() + cell(self.row, self.col);
  const ObsOffset* offs = rules_->obs_offsets.data();
  const ptrdiff_t* deltas = window_.data();
  const int n_cells = static_cast<int>(window_.size());
  const Object* objs = objects_.data();
  const int32_t* inv = inv_.data();
  const int n_items = num_items_;
  auto emit_inventory = [&](int id, uint8_t loc) {
    const int32_t* held = inv + static_cast<size_t>(id) * n_items;
    for (int i = 0; i < n_items; ++i)
      if (held[i] > 0) w.put(loc, static_cast<uint8_t>(inventory_base + i), clamp255(held[i]));
  };
  for (int k = 0; k < n_cells; ++k) {
    const Cell& c = base[deltas[k]];
    if (c.agent < 0 && c.object < 0) continue;
    const uint8_t loc = offs[k].location;
    if (c.agent >= 0) {
      const Object& o = objs[c.agent];
      const Agent& a = agents_[o.agent];
      w.put(loc, f[feature::kTypeId], o.type_id);
      w.put(loc, f[feature::kGroup], a.group);
      w.put(loc, f[feature::kFrozen], a.frozen > 0 ? 1 : 0);
      w.put(loc, f[feature::kOrientation], a.orientation);
      if (a.glyph) w.put(loc, f[feature::kGlyph], a.glyph);
      emit_inventory(c.agent, loc);
    }
    if (c.object >= 0) {
      const Object& o = objs[c.object];
      w.put(loc, f[feature::kTypeId], o.type_id);
      if (o.is_converter) {
        w.put(loc, f[feature::kConverting], (o.converting || o.cooling) ? 1 : 0);
        emit_inventory(c.object, loc);
      } else if (o.swappable) {
        w.put(loc, f[feature::kSwappable], 1);
      }
    }
  }
  if (w.n > T) {
    tokens_written_ += T;
    tokens_dropped_ += w.n - T;
  } else {
    tokens_written_ += w.n;
  }
}

EpisodeRecord Game::record() const {
  EpisodeRecord rec;
  rec.env = index_;
  rec.episode = episode_;
  rec.config = config_;
  rec.task = task_;
  rec.rules = rules_;
  rec.steps = tick_;
  rec.rewards.resize(num_agents_);
  for (int a = 0; a < num_agents_; ++a) rec.rewards[a] = agents_[a].total_reward;
  rec.agent_stats = stats_;
  rec.game_stats = game_stats_;
  const size_t k = game_stats_.size();
  rec.game_stats[k - 2] = static_cast<double>(tokens_written_);
  rec.game_stats[k - 1] = static_cast<double>(tokens_dropped_);
  return rec;
}

}  // namespace mettagrid
