// Hardhat 2 project: the devnet node (`npx hardhat node`) and contract-level tooling for ../contracts.
// ./contracts is a symlink to ../contracts (Hardhat refuses sources outside its root).
// Offline: compilation uses the npm `solc` package (solcjs) instead of downloading a compiler.
const { subtask } = require('hardhat/config');
const { TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD } = require('hardhat/builtin-tasks/task-names');

const SOLC_VERSION = '0.8.28'; // keep equal to chain/compiler.py SOLC_VERSION

subtask(TASK_COMPILE_SOLIDITY_GET_SOLC_BUILD, async (args, hre, runSuper) => {
  if (args.solcVersion !== SOLC_VERSION) return runSuper();
  const solc = require('solc');
  return {
    compilerPath: require.resolve('solc/soljson.js'),
    isSolcJs: true,
    version: SOLC_VERSION,
    longVersion: solc.version().replace('.Emscripten.clang', ''),
  };
});

module.exports = {
  solidity: {
    version: SOLC_VERSION,
    settings: { optimizer: { enabled: true, runs: 200 }, viaIR: true, evmVersion: 'cancun' },
  },
  paths: { sources: './contracts', cache: './cache', artifacts: './artifacts' },
  networks: {
    hardhat: {
      chainId: 31337,
      hardfork: 'cancun',
      // Each test deploys its own contracts; blocks are mined per transaction.
      mining: { auto: true },
    },
  },
};
