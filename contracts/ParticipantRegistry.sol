// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title ParticipantRegistry
/// @notice Wallet self-registration (by own transaction, or by an EIP-712 signature that anyone may relay, so a
///         participant needs no ether to join), operator suspension, and on-chain reputation.
/// @dev Reputation is fixed-point with REPUTATION_ONE = 1.0. Only REPUTATION_WRITER_ROLE
///      (the round manager) writes it: while finalizing a round, or when a participant claims a Merkle-committed
///      round result. Each write names its round and must be newer than the last one, so an old round's result
///      claimed late cannot overwrite a newer reputation.
contract ParticipantRegistry is AccessControl, EIP712 {
    bytes32 public constant OPERATOR_ROLE = keccak256("OPERATOR_ROLE");
    bytes32 public constant REPUTATION_WRITER_ROLE = keccak256("REPUTATION_WRITER_ROLE");

    bytes32 public constant REGISTRATION_TYPEHASH = keccak256("Registration(address account,uint256 deadline)");
    uint32 public constant REPUTATION_ONE = 1_000_000;
    uint32 public constant INITIAL_REPUTATION = 500_000;

    enum Status {
        None,
        Active,
        Suspended
    }

    struct Participant {
        Status status;
        uint32 reputation;
        uint64 registeredAt;
        uint64 reputationRound; // the round whose result set `reputation` (0: the initial value)
    }

    /// Not enumerable on-chain (an array would cost every registration ~40k gas): enumerate through the
    /// ParticipantRegistered events.
    mapping(address account => Participant) private _participants;
    uint256 private _count;

    error RegistryAlreadyRegistered(address account);
    error RegistryNotRegistered(address account);
    error RegistryNotSuspended(address account, Status status);
    error RegistryAlreadySuspended(address account);
    error RegistryReputationOutOfRange(address account, uint256 reputation);
    error RegistryInvalidSignature(address account, address recovered);
    error RegistrySignatureExpired(address account, uint256 deadline, uint256 timestamp);
    error RegistryStaleReputation(address account, uint256 roundId, uint256 latestRoundId);

    event ParticipantRegistered(address indexed account, uint256 reputation);
    event ParticipantSuspended(address indexed account, address indexed operator, bytes32 indexed reason);
    event ParticipantReinstated(address indexed account, address indexed operator);
    event ReputationUpdated(address indexed account, uint256 indexed roundId, uint256 previous, uint256 current);

    constructor(address admin) EIP712("FedLedger Registry", "1") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    /// @notice Register the calling wallet as a participant.
    function register() external {
        _register(msg.sender);
    }

    /// @notice Register `account`, which signed `Registration(account, deadline)` (EIP-712). The signature is
    ///         the answer to the API's registration challenge; it expires at `deadline` and cannot register twice.
    function registerFor(address account, uint256 deadline, bytes calldata signature) external {
        if (block.timestamp > deadline) revert RegistrySignatureExpired(account, deadline, block.timestamp);
        // The third value (the bad length or s) is not needed: the error code and the recovered address decide.
        // slither-disable-next-line unused-return
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(registrationDigest(account, deadline), signature);
        if (err != ECDSA.RecoverError.NoError || recovered != account) revert RegistryInvalidSignature(account, recovered);
        _register(account);
    }

    /// @notice The EIP-712 digest `account` signs to register with a relayer.
    function registrationDigest(address account, uint256 deadline) public view returns (bytes32) {
        return _hashTypedDataV4(keccak256(abi.encode(REGISTRATION_TYPEHASH, account, deadline)));
    }

    function _register(address account) private {
        Participant storage p = _participants[account];
        if (p.status != Status.None) revert RegistryAlreadyRegistered(account);
        p.status = Status.Active;
        p.reputation = INITIAL_REPUTATION;
        p.registeredAt = uint64(block.timestamp);
        unchecked {
            _count += 1; // cannot overflow: one per address
        }
        emit ParticipantRegistered(account, INITIAL_REPUTATION);
    }

    /// @notice Suspend a participant: it can no longer commit updates. `reason` is a short code.
    function suspend(address account, bytes32 reason) external onlyRole(OPERATOR_ROLE) {
        Participant storage p = _participants[account];
        if (p.status == Status.None) revert RegistryNotRegistered(account);
        if (p.status == Status.Suspended) revert RegistryAlreadySuspended(account);
        p.status = Status.Suspended;
        emit ParticipantSuspended(account, msg.sender, reason);
    }

    /// @notice Lift a suspension.
    function reinstate(address account) external onlyRole(OPERATOR_ROLE) {
        Participant storage p = _participants[account];
        if (p.status != Status.Suspended) revert RegistryNotSuspended(account, p.status);
        p.status = Status.Active;
        emit ParticipantReinstated(account, msg.sender);
    }

    /// @notice Record a participant's reputation after round `roundId`, which must be newer than the round of the
    ///         value it replaces.
    function setReputation(address account, uint256 roundId, uint32 value) external onlyRole(REPUTATION_WRITER_ROLE) {
        Participant storage p = _participants[account];
        if (p.status == Status.None) revert RegistryNotRegistered(account);
        if (value > REPUTATION_ONE) revert RegistryReputationOutOfRange(account, value);
        if (roundId <= p.reputationRound) revert RegistryStaleReputation(account, roundId, p.reputationRound);
        uint32 previous = p.reputation;
        p.reputation = value;
        p.reputationRound = uint64(roundId); // round ids count up from 1 by one: they never reach 2**64
        emit ReputationUpdated(account, roundId, previous, value);
    }

    function isActive(address account) external view returns (bool) {
        // An enum compared with a constant: slither's incorrect-equality taints it through `registerFor`'s
        // timestamp check, but no balance or time is compared here.
        // slither-disable-next-line incorrect-equality,timestamp
        return _participants[account].status == Status.Active;
    }

    function statusOf(address account) external view returns (Status) {
        return _participants[account].status;
    }

    function reputationOf(address account) external view returns (uint32) {
        return _participants[account].reputation;
    }

    /// @notice The round whose result set `account`'s reputation (0 while it is the initial value).
    function reputationRoundOf(address account) external view returns (uint256) {
        return _participants[account].reputationRound;
    }

    function participantOf(address account) external view returns (Participant memory) {
        return _participants[account];
    }

    function participantCount() external view returns (uint256) {
        return _count;
    }
}
