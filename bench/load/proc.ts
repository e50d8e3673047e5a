/**
 * What `/proc` tells about a process and the machine: CPU time, resident
 * memory, the CPU model. Linux only, as the benchmark is.
 *
 * @module
 */

/** Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`). */
export const CLOCK_TICKS = 100;

/** CPU seconds (user + system) a process has used; `null` once it is gone. */
export function cpuSeconds(pid: number | "self"): number | null {
  try {
    const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
    // The command name may hold spaces; fields count from after its ")".
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const utime = Number(fields[11]);
    const stime = Number(fields[12]);
    return (utime + stime) / CLOCK_TICKS;
  } catch {
    return null;
  }
}

/** Resident memory of a process in bytes (`VmRSS`); `null` once it is gone. */
export function rssBytes(pid: number | "self"): number | null {
  return statusBytes(pid, "VmRSS");
}

/**
 * A memory figure of a process from `/proc/<pid>/status`, in bytes: `VmRSS`
 * (resident now) or `VmHWM` (the peak); `null` once the process is gone.
 */
export function statusBytes(
  pid: number | "self",
  field: "VmRSS" | "VmHWM",
): number | null {
  try {
    const status = Deno.readTextFileSync(`/proc/${pid}/status`);
    const match = status.match(new RegExp(`^${field}:\\s+(\\d+) kB`, "m"));
    return match ? Number(match[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/**
 * Jiffies of the whole machine, from `/proc/stat`: busy, total, and the
 * part spent in interrupts (loopback networking runs there, charged to no
 * process).
 */
export function machineTicks(): { busy: number; total: number; irq: number } {
  const line = Deno.readTextFileSync("/proc/stat").split("\n")[0] ?? "";
  const values = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice;
  // guest time is counted in user already.
  const total = values.slice(0, 8).reduce((a, b) => a + b, 0);
  const idle = (values[3] ?? 0) + (values[4] ?? 0);
  const irq = (values[5] ?? 0) + (values[6] ?? 0);
  return { busy: total - idle, total, irq };
}

/** Load averages over 1, 5 and 15 minutes. */
export function loadAverage(): [number, number, number] {
  const [one, five, fifteen] = Deno.readTextFileSync("/proc/loadavg").split(
    " ",
  ).map(Number);
  return [one ?? 0, five ?? 0, fifteen ?? 0];
}

/** The machine, as the results name it. */
export interface MachineInfo {
  cpuModel: string;
  cores: number;
  memTotalBytes: number;
  kernel: string;
  deno: string;
  v8: string;
  typescript: string;
  openFilesLimit: string;
  loadAverageAtStart: [number, number, number];
}

/** Reads the CPU model, core count, memory, kernel and Deno versions. */
export function machineInfo(): MachineInfo {
  const cpuinfo = Deno.readTextFileSync("/proc/cpuinfo");
  const cpuModel = cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1] ?? "unknown";
  const meminfo = Deno.readTextFileSync("/proc/meminfo");
  const memKb = Number(meminfo.match(/^MemTotal:\s+(\d+)/m)?.[1] ?? 0);
  let kernel = "unknown";
  try {
    kernel = Deno.readTextFileSync("/proc/sys/kernel/osrelease").trim();
  } catch { /* not Linux */ }
  let openFilesLimit = "unknown";
  try {
    const limits = Deno.readTextFileSync("/proc/self/limits");
    const match = limits.match(/^Max open files\s+(\S+)\s+(\S+)/m);
    if (match) openFilesLimit = `${match[1]} soft, ${match[2]} hard`;
  } catch { /* not Linux */ }
  return {
    cpuModel,
    cores: navigator.hardwareConcurrency,
    memTotalBytes: memKb * 1024,
    kernel,
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    typescript: Deno.version.typescript,
    openFilesLimit,
    loadAverageAtStart: loadAverage(),
  };
}
