// Free-running harness of hwgen_top: the input beats the cocotb testbench (sim/tb_top.py) sends, driven
// from C++ with no Python in the loop, to measure what the testbench costs (bench/sim_overhead.py).
//
//     freerun BEATS_FILE OUTPUT_FILE
//
// BEATS_FILE (text): a header line "<images> <input beats> <output beats> <cycle limit>" (per image), then
// images x input beats lines, each one input payload in hex as the port takes it ({data, last}, docs/stream.md).
// OUTPUT_FILE: one line per image, "<cycles port> <output payload hex> ...", the raw payloads ({data, last});
// the caller, which knows out_bits, splits and sign-extends them.
//
// The stream sequence is the testbench's without stalls: reset for 3 cycles; per image, valid high with
// each input beat until ready takes it, then valid low until the image's output beats are in; out__ready
// stays high; `cycles` is read after the edge that takes the final output beat. Handshakes are sampled
// before the rising edge. The ROM images ($readmemh) are read from the working directory.
// Prints "clock_cycles <n>", "loop_s <seconds>" and "cycles_per_s <n>" (the loop only: the model's
// construction and ROM loading are before it).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "Vtop.h"  // --prefix Vtop; Verilator spells the "__" of the port names inp__valid, ... as "___05F"
#include "verilated.h"

using Words = std::vector<uint32_t>;  // a port value, least significant 32 bits first

// Port access for any width Verilator gives a port: CData/SData/IData/QData, or VlWide<N> above 64 bits.
template <typename T>
static void put(T& port, const Words& w) {
    port = static_cast<T>(w[0] | (static_cast<uint64_t>(w.size() > 1 ? w[1] : 0) << 32));
}
template <std::size_t N>
static void put(VlWide<N>& port, const Words& w) {
    for (std::size_t i = 0; i < N; ++i) port[i] = i < w.size() ? w[i] : 0;
}
template <typename T>
static Words get(const T& port) {
    const uint64_t v = port;
    return {static_cast<uint32_t>(v), static_cast<uint32_t>(v >> 32)};
}
template <std::size_t N>
static Words get(const VlWide<N>& port) {
    Words w(N);
    for (std::size_t i = 0; i < N; ++i) w[i] = port[i];
    return w;
}

static Words from_hex(const std::string& s) {
    Words w;
    for (std::size_t end = s.size(); end > 0; end -= end < 8 ? end : 8) {
        const std::size_t begin = end < 8 ? 0 : end - 8;
        w.push_back(static_cast<uint32_t>(std::stoul(s.substr(begin, end - begin), nullptr, 16)));
    }
    if (w.empty()) w.push_back(0);
    return w;
}

static std::string to_hex(const Words& w) {
    std::string s;
    char part[9];
    for (std::size_t i = w.size(); i-- > 0;) {
        std::snprintf(part, sizeof part, s.empty() ? "%x" : "%08x", w[i]);
        if (!s.empty() || w[i] || i == 0) s += part;
    }
    return s;
}

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: %s BEATS_FILE OUTPUT_FILE\n", argv[0]);
        return 2;
    }
    std::ifstream in(argv[1]);
    std::size_t images = 0, in_beats = 0, out_beats = 0;
    uint64_t limit = 0;
    if (!(in >> images >> in_beats >> out_beats >> limit)) {
        std::fprintf(stderr, "%s: expected a header '<images> <input beats> <output beats> <cycle limit>'\n", argv[1]);
        return 2;
    }
    std::vector<Words> beats;
    for (std::string hex; beats.size() < images * in_beats && in >> hex;) beats.push_back(from_hex(hex));
    if (beats.size() != images * in_beats) {
        std::fprintf(stderr, "%s: expected %zu input beats, found %zu\n", argv[1], images * in_beats, beats.size());
        return 2;
    }

    const auto context = std::make_unique<VerilatedContext>();
    const auto top = std::make_unique<Vtop>(context.get(), "");
    top->clk = 0;
    top->rst = 1;
    top->inp___05Fvalid = 0;
    top->out___05Fready = 0;
    top->eval();  // runs the initial blocks: the ROM images are read here, before the timed loop

    uint64_t clock_cycles = 0;
    const auto rising_edge = [&] {
        top->clk = 1;
        top->eval();
        ++clock_cycles;
    };
    const auto falling_edge = [&] {  // after the inputs of the next cycle are set: settles ready and valid
        top->clk = 0;
        top->eval();
    };
    std::ofstream out(argv[2]);
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < 3; ++i) {
        rising_edge();
        falling_edge();
    }
    top->rst = 0;
    top->out___05Fready = 1;
    int status = 0;
    for (std::size_t image = 0; image < images && !status; ++image) {
        const Words* next = &beats[image * in_beats];
        const Words* const end = next + in_beats;
        top->inp___05Fvalid = 1;
        put(top->inp___05Fpayload, *next);
        falling_edge();
        std::vector<Words> got;
        const uint64_t start = clock_cycles;
        while (got.size() < out_beats) {
            if (clock_cycles - start > limit) {
                std::fprintf(stderr, "image %zu: %zu of %zu output beats within %llu cycles\n", image, got.size(),
                             out_beats, static_cast<unsigned long long>(limit));
                status = 1;
                break;
            }
            const bool in_fire = top->inp___05Fvalid && top->inp___05Fready;
            const bool out_fire = top->out___05Fvalid;  // out__ready is high
            if (out_fire) got.push_back(get(top->out___05Fpayload));
            rising_edge();
            if (in_fire && ++next != end) put(top->inp___05Fpayload, *next);
            if (in_fire && next == end) top->inp___05Fvalid = 0;
            if (got.size() < out_beats) falling_edge();
        }
        out << to_hex(get(top->cycles));  // after the edge that took the final beat, as the testbench reads it
        for (const Words& w : got) out << ' ' << to_hex(w);
        out << '\n';
    }
    const double loop_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    top->final();
    std::printf("clock_cycles %llu\nloop_s %.6f\ncycles_per_s %.0f\n", static_cast<unsigned long long>(clock_cycles),
                loop_s, clock_cycles / loop_s);
    return status;
}
