// pybind11 module `envs._mettagrid`: a thin layer over mettagrid::BatchedEnv. It reads the plain dict
// of GameConfig.engine_spec(), checks the caller's numpy buffers once, and releases the GIL in step and
// reset. Every entry point of an Engine holds the engine's mutex while it touches the engine, so calls
// from several threads run one at a time (cpp/README.md, "Threads").
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <mutex>
#include <optional>
#include <string>

#include "mettagrid/env.hpp"

namespace py = pybind11;
using namespace mettagrid;

namespace {

template <typename T>
T get(const py::dict& d, const char* key) {
  if (!d.contains(key)) throw py::key_error(std::string("engine spec: missing key '") + key + "'");
  return d[key].cast<T>();
}

std::vector<ItemCount> pairs(const py::handle& h) {
  std::vector<ItemCount> out;
  for (auto p : h) {
    auto v = p.cast<std::vector<int>>();
    if (v.size() != 2) throw py::value_error("engine spec: expected [item, count] pairs");
    out.emplace_back(v[0], v[1]);
  }
  return out;
}

GameSpec parse_spec(const py::dict& d) {
  GameSpec s;
  s.max_steps = get<int>(d, "max_steps");
  s.episode_truncates = get<bool>(d, "episode_truncates");
  s.random_first_episode_cut = get<bool>(d, "random_first_episode_cut");
  s.obs_width = get<int>(d, "obs_width");
  s.obs_height = get<int>(d, "obs_height");
  s.num_tokens = get<int>(d, "num_tokens");
  s.num_items = get<int>(d, "num_items");
  s.item_names = get<std::vector<std::string>>(d, "item_names");
  s.action_names = get<std::vector<std::string>>(d, "action_names");
  s.actions = get<std::vector<std::pair<std::string, int>>>(d, "actions");
  s.feature_ids = get<std::map<std::string, int>>(d, "feature_ids");
  s.inventory_feature_base = get<int>(d, "inventory_feature_base");
  for (auto h : get<py::list>(d, "objects")) {
    py::dict o = h.cast<py::dict>();
    ObjectSpec os;
    os.name = get<std::string>(o, "name");
    os.type_id = get<int>(o, "type_id");
    os.is_wall = get<bool>(o, "is_wall");
    os.swappable = get<bool>(o, "swappable");
    os.inputs = pairs(o["inputs"]);
    os.outputs = pairs(o["outputs"]);
    os.max_output = get<int>(o, "max_output");
    os.conversion_ticks = get<int>(o, "conversion_ticks");
    os.cooldown = get<int>(o, "cooldown");
    os.initial_resource_count = get<int>(o, "initial_resource_count");
    os.color = get<int>(o, "color");
    s.objects.push_back(std::move(os));
  }
  py::dict a = get<py::dict>(d, "agent");
  s.agent.resource_limits = get<std::vector<int>>(a, "resource_limits");
  for (auto h : get<py::list>(a, "shared_limits")) {
    py::sequence g = h.cast<py::sequence>();
    if (py::len(g) != 2) throw py::value_error("engine spec: shared_limits entries are [[items], limit]");
    s.agent.shared_limits.push_back({g[0].cast<std::vector<int>>(), g[1].cast<int>()});
  }
  s.agent.initial_inventory = get<std::vector<int>>(a, "initial_inventory");
  s.agent.reward_weights = get<std::vector<float>>(a, "reward_weights");
  for (double c : get<std::vector<double>>(a, "reward_caps"))
    s.agent.reward_caps.push_back(std::isinf(c) ? std::numeric_limits<float>::infinity() : static_cast<float>(c));
  s.agent.freeze_duration = get<int>(a, "freeze_duration");
  s.agent.action_failure_penalty = get<float>(a, "action_failure_penalty");
  s.agent.group_id = get<int>(a, "group_id");
  py::dict att = get<py::dict>(d, "attack");
  s.attack_cost = pairs(att["cost"]);
  s.attack_defense = pairs(att["defense"]);
  s.num_glyphs = get<int>(d, "num_glyphs");
  py::dict m = get<py::dict>(d, "map");
  s.map.kind = get<std::string>(m, "kind");
  if (s.map.kind == "ascii") {
    s.map.grid = get<std::vector<std::vector<int>>>(m, "grid");
  } else {
    s.map.num_agents = get<int>(m, "num_agents");
    s.map.rooms_r = get<int>(m, "rooms_r");
    s.map.rooms_c = get<int>(m, "rooms_c");
    s.map.room_size = get<int>(m, "room_size");
    s.map.border = get<int>(m, "border");
    s.map.wall_index = get<int>(m, "wall_index");
    s.map.room_objects = pairs(m["room_objects"]);
  }
  return s;
}

template <typename T>
T* checked(py::array& arr, std::vector<py::ssize_t> shape, const char* name, const char* dtype) {
  if (!py::isinstance<py::array_t<T>>(arr) || !py::dtype::of<T>().is(arr.dtype()))
    throw py::type_error(std::string(name) + ": expected dtype " + dtype);
  if (arr.ndim() != static_cast<py::ssize_t>(shape.size()))
    throw py::value_error(std::string(name) + ": wrong number of dimensions");
  for (size_t i = 0; i < shape.size(); ++i)
    if (arr.shape(i) != shape[i]) throw py::value_error(std::string(name) + ": wrong shape");
  if (!(arr.flags() & py::array::c_style)) throw py::value_error(std::string(name) + ": must be C-contiguous");
  if (!arr.writeable()) throw py::value_error(std::string(name) + ": must be writeable");
  return static_cast<T*>(arr.mutable_data());
}

// Holds an engine's mutex while the GIL stays held. If the mutex is taken it waits with the GIL
// released, so that no thread ever blocks on the mutex while holding the GIL (the holder of the mutex
// may need the GIL to finish, e.g. grid_objects building its dicts).
class LockWithGil {
 public:
  explicit LockWithGil(std::mutex& m) : lock_(m, std::try_to_lock) {
    if (!lock_.owns_lock()) {
      py::gil_scoped_release nogil;
      lock_.lock();
    }
  }

 private:
  std::unique_lock<std::mutex> lock_;
};

class Engine {
 public:
  Engine(const py::dict& spec, int num_envs, uint64_t seed) : env_(parse_spec(spec), num_envs, seed) {}

  void set_buffers(py::array obs, py::array rewards, py::array terminals, py::array truncations) {
    const py::ssize_t R = static_cast<py::ssize_t>(env_.num_envs()) * env_.num_agents();
    auto* o = checked<uint8_t>(obs, {R, env_.num_tokens(), 3}, "observations", "uint8");
    auto* r = checked<float>(rewards, {R}, "rewards", "float32");
    auto* te = checked<bool>(terminals, {R}, "terminals", "bool");
    auto* tr = checked<bool>(truncations, {R}, "truncations", "bool");
    LockWithGil lock(mu_);
    env_.set_buffers(o, r, te, tr);
    keep_ = py::make_tuple(obs, rewards, terminals, truncations);
  }

  void reset(std::optional<uint64_t> seed) {
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    env_.reset(seed.has_value(), seed.value_or(0));
  }

  // actions: int32 (used in place) or int64 (narrowed here; out-of-range ids stay out of range).
  void step(py::array actions, bool auto_reset) {
    const py::ssize_t R = static_cast<py::ssize_t>(env_.num_envs()) * env_.num_agents();
    const py::dtype dt = actions.dtype();
    const bool is32 = dt.kind() == 'i' && dt.itemsize() == 4;
    const bool is64 = dt.kind() == 'i' && dt.itemsize() == 8;
    if (!is32 && !is64) throw py::type_error("actions: expected dtype int32 or int64");
    if (actions.ndim() != 1 || actions.shape(0) != R)
      throw py::value_error("actions: expected shape [" + std::to_string(R) + "]");
    if (!(actions.flags() & py::array::c_style)) throw py::value_error("actions: must be C-contiguous");
    // `actions` stays referenced by this call, so its data may be read without the GIL.
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);  // also guards scratch_
    const int32_t* a;
    if (is32) {
      a = static_cast<const int32_t*>(actions.data());
    } else {
      const auto* src = static_cast<const int64_t*>(actions.data());
      scratch_.resize(R);
      for (py::ssize_t i = 0; i < R; ++i)
        scratch_[i] = static_cast<int32_t>(std::max<int64_t>(-1, std::min<int64_t>(src[i], INT32_MAX)));
      a = scratch_.data();
    }
    env_.step(a, auto_reset);
  }

  void reset_games(py::array mask) {
    auto* m = checked<bool>(mask, {env_.num_envs()}, "mask", "bool");
    py::gil_scoped_release nogil;
    std::lock_guard<std::mutex> lock(mu_);
    env_.reset_games(m);
  }

  py::array_t<bool> games_done() {
    py::array_t<bool> out(env_.num_envs());
    auto* p = out.mutable_data();
    LockWithGil lock(mu_);
    for (int g = 0; g < env_.num_envs(); ++g) p[g] = env_.game(g).done();
    return out;
  }

  // Game configs (see mettagrid::BatchedEnv): spec dicts as for the constructor. pybind11 raises the
  // engine's std::invalid_argument as ValueError and std::out_of_range as IndexError.
  int add_config(const py::dict& spec) {
    GameSpec s = parse_spec(spec);
    LockWithGil lock(mu_);
    return env_.add_config(std::move(s));
  }
  void set_config(int slot, const py::dict& spec) {
    GameSpec s = parse_spec(spec);
    LockWithGil lock(mu_);
    env_.set_config(slot, std::move(s));
  }
  void set_next_config(int g, int slot, int64_t task) {
    LockWithGil lock(mu_);
    env_.set_next_config(g, slot, task);
  }
  void set_next_episode(int g, int episode) {
    LockWithGil lock(mu_);
    env_.set_next_episode(g, episode);
  }
  uint64_t seed() {
    LockWithGil lock(mu_);
    return env_.seed();
  }
  int num_configs() {
    LockWithGil lock(mu_);
    return env_.num_configs();
  }
  py::tuple game_config(int g) {
    const Game& game = checked_game(g);
    LockWithGil lock(mu_);
    return py::make_tuple(game.config(), game.task());
  }

  py::list episode_stats() {
    const Rules& rules = env_.rules();  // slot 0: per-agent stat names are the same in every slot
    const int A = env_.num_agents();
    std::vector<EpisodeRecord> records;
    {
      py::gil_scoped_release nogil;
      std::lock_guard<std::mutex> lock(mu_);
      records = env_.take_episodes();
    }
    py::list out;
    for (auto& rec : records) {
      py::dict ep;
      ep["env"] = rec.env;
      ep["episode"] = rec.episode;
      ep["config"] = rec.config;
      ep["task"] = rec.task;
      ep["steps"] = rec.steps;
      py::array_t<float> rew(A);
      std::copy(rec.rewards.begin(), rec.rewards.end(), rew.mutable_data());
      ep["reward"] = rew;
      py::dict agent;
      for (size_t s = 0; s < rules.stat_names.size(); ++s) {
        py::array_t<double> v(A);
        std::copy(rec.agent_stats.begin() + s * A, rec.agent_stats.begin() + (s + 1) * A, v.mutable_data());
        agent[py::str(rules.stat_names[s])] = v;
      }
      ep["agent"] = agent;
      py::dict game;
      const auto& game_stat_names = rec.rules->game_stat_names;  // the episode's config: its object kinds
      for (size_t s = 0; s < game_stat_names.size(); ++s)
        game[py::str(game_stat_names[s])] = rec.game_stats[s];
      ep["game"] = game;
      out.append(ep);
    }
    return out;
  }

  // Every object of game g; with dynamic_only, only those that can change (agents, converters,
  // swappable objects): replays take the static walls once.
  py::list grid_objects(int g, bool dynamic_only) {
    const Game& game = checked_game(g);
    LockWithGil lock(mu_);
    const Rules& rules = game.rules();  // the game's current config
    const auto& items = rules.spec.item_names;
    auto item_dict = [&](const std::vector<ItemCount>& v) {
      py::dict d;
      for (const auto& p : v) d[py::str(items[p.first])] = p.second;
      return d;
    };
    py::list out;
    const auto& objects = game.objects();
    for (int id = 0; id < static_cast<int>(objects.size()); ++id) {
      const Object& o = objects[id];
      if (dynamic_only && o.layer != 0 && !o.is_converter && !o.swappable) continue;
      py::dict d;
      d["id"] = id;
      d["type_id"] = static_cast<int>(o.type_id);
      d["type_name"] = o.type_id < rules.type_names.size() ? rules.type_names[o.type_id] : std::string("unknown");
      d["row"] = o.row;
      d["col"] = o.col;
      d["layer"] = static_cast<int>(o.layer);
      py::dict inv;
      for (int i = 0; i < rules.spec.num_items; ++i)
        if (game.inventory(id, i) > 0) inv[py::str(items[i])] = game.inventory(id, i);
      d["inventory"] = inv;
      if (o.layer == 0) {
        const Agent& a = game.agents()[o.agent];
        d["agent_id"] = o.agent;
        d["orientation"] = static_cast<int>(a.orientation);
        d["frozen"] = a.frozen;
        d["group"] = static_cast<int>(a.group);
        d["glyph"] = static_cast<int>(a.glyph);
        d["last_action"] = a.last_action;
        d["last_action_success"] = a.last_success;
        d["current_reward"] = a.current_reward;
        d["total_reward"] = a.total_reward;
      } else if (o.is_converter) {
        const ObjectSpec& os = rules.spec.objects[o.type_index];
        d["converting"] = o.converting;
        d["cooling_down"] = o.cooling;
        d["cooldown_remaining"] = o.cooling ? static_cast<int64_t>(o.cooldown_end - game.tick()) : int64_t{0};
        d["recipe_inputs"] = item_dict(os.inputs);
        d["recipe_outputs"] = item_dict(os.outputs);
      }
      out.append(d);
    }
    return out;
  }

  int64_t current_step(int g) {
    const Game& game = checked_game(g);
    LockWithGil lock(mu_);
    return game.tick();
  }
  int episode_index(int g) {
    const Game& game = checked_game(g);
    LockWithGil lock(mu_);
    return game.episode();
  }
  py::tuple map_size(int g) {
    const Game& game = checked_game(g);
    LockWithGil lock(mu_);
    return py::make_tuple(game.height(), game.width());
  }
  int num_envs() const { return env_.num_envs(); }
  int num_agents() const { return env_.num_agents(); }
  int num_tokens() const { return env_.num_tokens(); }
  std::vector<std::string> stat_names() const { return env_.rules().stat_names; }
  std::vector<std::string> type_names() const { return env_.rules().type_names; }

 private:
  const Game& checked_game(int g) const {
    if (g < 0 || g >= env_.num_envs())
      throw py::index_error("game " + std::to_string(g) + " out of range [0, " + std::to_string(env_.num_envs()) + ")");
    return env_.game(g);
  }
  BatchedEnv env_;
  std::mutex mu_;  // held by every call that reads or changes env_ (or scratch_)
  py::object keep_;
  std::vector<int32_t> scratch_;
};

}  // namespace

PYBIND11_MODULE(_mettagrid, m) {
  m.doc() = "The MettaGrid arena engine (C++). Use envs.MettaGrid, not this module directly.";
  // The feature names the engine knows, in the original's order; its table starts inventory after them.
  m.attr("FEATURE_NAMES") = std::vector<std::string>(feature::kNames, feature::kNames + feature::kCount);
  m.attr("INVENTORY_FEATURE_BASE") = static_cast<int>(feature::kCount);
  m.attr("MAX_ITEM_COUNT") = kMaxItemCount;
  py::class_<Engine>(m, "Engine")
      .def(py::init<const py::dict&, int, uint64_t>(), py::arg("spec"), py::arg("num_envs"), py::arg("seed"))
      .def("set_buffers", &Engine::set_buffers)
      .def("reset", &Engine::reset, py::arg("seed") = py::none())
      .def("step", &Engine::step, py::arg("actions"), py::arg("auto_reset"))
      .def("reset_games", &Engine::reset_games)
      .def("games_done", &Engine::games_done)
      .def("add_config", &Engine::add_config, py::arg("spec"))
      .def("set_config", &Engine::set_config, py::arg("slot"), py::arg("spec"))
      .def("set_next_config", &Engine::set_next_config, py::arg("game"), py::arg("slot"), py::arg("task"))
      .def("game_config", &Engine::game_config, py::arg("game"))
      .def("set_next_episode", &Engine::set_next_episode, py::arg("game"), py::arg("episode"))
      .def_property_readonly("seed", &Engine::seed)
      .def_property_readonly("num_configs", &Engine::num_configs)
      .def("episode_stats", &Engine::episode_stats)
      .def("grid_objects", &Engine::grid_objects, py::arg("game") = 0, py::arg("dynamic_only") = false)
      .def("current_step", &Engine::current_step, py::arg("game") = 0)
      .def("episode_index", &Engine::episode_index, py::arg("game") = 0)
      .def("map_size", &Engine::map_size, py::arg("game") = 0)
      .def_property_readonly("num_envs", &Engine::num_envs)
      .def_property_readonly("num_agents", &Engine::num_agents)
      .def_property_readonly("num_tokens", &Engine::num_tokens)
      .def_property_readonly("stat_names", &Engine::stat_names)
      .def_property_readonly("type_names", &Engine::type_names);
}
