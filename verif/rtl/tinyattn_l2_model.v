// tinyattn_l2_model: the L2 behind the cluster's DMA, as a simulation model in Verilog.
//
// The cocotb L2 model (tinyattn.verif.l2_model.L2Model) wakes Python in every
// cycle the DMA has L2 traffic; this one keeps Python out of the loop, for long runs
// (a whole model). It answers every request one cycle after accepting it, and takes one
// request per cycle while its response is taken: the timing of L2Model with latency 0.
//
// - Contents: $readmemh of the file named by +L2_IMAGE=<path> (one beat per line, most
//   significant byte first) at time 0; the rest of the memory reads zero.
// - dump: in the cycle it is high, $writememh of beats 0 .. +L2_DUMP_WORDS=<n> - 1 to
//   +L2_DUMP=<path>.
// - error: sticky; a request beyond WORDS beats, or a request with no byte enabled.
`default_nettype none
module tinyattn_l2_model #(
    parameter BITS = 128,
    parameter ADDR_BITS = 32,
    parameter WORDS = 1024
) (
    input  wire                  clk,
    input  wire                  rst,
    input  wire                  req_valid,
    output wire                  req_ready,
    input  wire [ADDR_BITS-1:0]  req_addr,
    input  wire                  req_we,
    input  wire [BITS/8-1:0]     req_be,
    input  wire [BITS-1:0]       req_wdata,
    output reg                   rsp_valid,
    input  wire                  rsp_ready,
    output reg  [BITS-1:0]       rsp_rdata,
    input  wire                  dump,
    output reg                   error
);
    localparam BEAT_BYTES = BITS / 8;
    reg [BITS-1:0] mem [0:WORDS-1];
    reg [1023:0] image_path;
    reg [1023:0] dump_path;
    integer dump_words;
    integer i;

    wire [ADDR_BITS-1:0] word = req_addr / BEAT_BYTES;
    wire in_range = word < WORDS;

    initial begin
        for (i = 0; i < WORDS; i = i + 1)
            mem[i] = {BITS{1'b0}};
        if ($value$plusargs("L2_IMAGE=%s", image_path))
            $readmemh(image_path, mem);
        dump_words = 0;
        if (!$value$plusargs("L2_DUMP_WORDS=%d", dump_words))
            dump_words = 0;
        if (!$value$plusargs("L2_DUMP=%s", dump_path))
            dump_path = 0;
    end

    // A new request is taken when the response slot is free or being freed.
    assign req_ready = !rsp_valid || rsp_ready;

    always @(posedge clk) begin
        if (rst) begin
            rsp_valid <= 1'b0;
            error <= 1'b0;
        end else begin
            if (rsp_valid && rsp_ready)
                rsp_valid <= 1'b0;
            if (req_valid && req_ready) begin
                rsp_valid <= 1'b1;
                if (!in_range || req_be == {BEAT_BYTES{1'b0}})
                    error <= 1'b1;
                if (in_range) begin
                    rsp_rdata <= mem[word];
                    if (req_we)
                        for (i = 0; i < BEAT_BYTES; i = i + 1)
                            if (req_be[i])
                                mem[word][8*i +: 8] <= req_wdata[8*i +: 8];
                end else
                    rsp_rdata <= {BITS{1'b0}};
            end
        end
        if (dump && dump_words > 0)
            $writememh(dump_path, mem, 0, dump_words - 1);
    end
endmodule
`default_nettype wire
